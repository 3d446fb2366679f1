//! The login page, the login form handler and the chat page.

use std::sync::Arc;

use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::response::Redirect;
use rocket::{Route, State};
use rocket_dyn_templates::{context, Template};

use super::form::LossyForm;
use super::guards::{Caller, ClientHost};
use super::SESSION_COOKIE;
use crate::error::Error;
use crate::room::Room;

/// The routes of the pages.
pub fn routes() -> Vec<Route> {
    routes![index, login, chat]
}

/// A page or a redirect.
#[derive(Responder)]
pub enum Page {
    Html(Template),
    Refused((Status, Template)),
    Redirect(Redirect),
}

/// The login page, or the chat for someone already logged in.
#[get("/")]
fn index(room: &State<Arc<Room>>, caller: Caller) -> Page {
    match caller.0 {
        Some(session) if room.is_active(session) => {
            Page::Redirect(Redirect::to("/chat/"))
        }
        _ => Page::Html(login_page(None, "")),
    }
}

/// Joins the room and sets the session cookie, or shows the login page
/// again with the reason.
///
/// Always issues a fresh token, whatever cookie came with the request.
#[post("/login", data = "<form>")]
async fn login(
    room: &State<Arc<Room>>,
    host: ClientHost,
    cookies: &CookieJar<'_>,
    form: LossyForm,
) -> Page {
    let nick = form.get("nick").unwrap_or("");
    match room.join(nick, &host.0).await {
        Ok(joined) => {
            let cookie = Cookie::build((SESSION_COOKIE, joined.token))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict);
            cookies.add(cookie);
            Page::Redirect(Redirect::to("/chat/"))
        }
        Err(error) => {
            let (status, reason) = refusal(&error, nick);
            tracing::warn!(host = %host.0, %reason, "login refused");
            Page::Refused((status, login_page(Some(&reason), nick)))
        }
    }
}

/// The status and the sentence a refused login shows.
fn refusal(error: &Error, nick: &str) -> (Status, String) {
    match error {
        Error::InvalidNick => (
            Status::BadRequest,
            "A nickname must be 1 to 16 characters, alphanumeric only \
             (letters A-Z and digits)."
                .to_string(),
        ),
        Error::NickTaken(nick) => (
            Status::Conflict,
            format!("The nickname {nick} is not available; pick another."),
        ),
        other => {
            tracing::error!(error = %other, %nick, "login failed");
            (
                Status::ServiceUnavailable,
                "The server could not log you in just now; try again.".into(),
            )
        }
    }
}

fn login_page(error: Option<&str>, nick: &str) -> Template {
    Template::render("login", context! { error, nick })
}

/// The chat page, for a live session only.
#[get("/chat")]
fn chat(room: &State<Arc<Room>>, caller: Caller) -> Page {
    let nick = caller.0.and_then(|session| room.nick(session));
    match nick {
        Some(nick) => Page::Html(Template::render("chat", context! { nick })),
        None => Page::Redirect(Redirect::to("/")),
    }
}
