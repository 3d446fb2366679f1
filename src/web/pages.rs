//! The login page, the login form handler and the chat page.

use std::sync::Arc;
use std::time::Duration;

use rocket::http::{Cookie, CookieJar, SameSite as CookieSameSite, Status};
use rocket::response::Redirect;
use rocket::{Route, State};
use rocket_dyn_templates::{context, Template};

use super::form::LossyForm;
use super::guards::{Caller, ClientHost, SameSite, WebPolicy};
use super::SESSION_COOKIE;
use crate::error::Error;
use crate::limits::describe;
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
    Text((Status, String)),
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
/// Always issues a fresh token, whatever cookie came with the request;
/// a live session that cookie named leaves (reason "normal"), so it
/// neither lingers nor can be planted. Refused with 403 when a browser
/// posts it from another site.
#[post("/login", data = "<form>")]
async fn login(
    _same_site: SameSite,
    room: &State<Arc<Room>>,
    policy: &State<WebPolicy>,
    caller: Caller,
    host: ClientHost,
    cookies: &CookieJar<'_>,
    form: LossyForm,
) -> Page {
    let nick = form.get("nick").unwrap_or("");
    match room.join_replacing(nick, &host.0, caller.0).await {
        Ok(joined) => {
            if let Caller(Some(previous)) = caller {
                if let Err(e) = room.leave(previous, "normal").await {
                    tracing::error!(error = %e, "could not end a session");
                }
            }
            let mut cookie = Cookie::build((SESSION_COOKIE, joined.token))
                .path("/")
                .http_only(true)
                .same_site(CookieSameSite::Strict);
            if policy.secure_cookies {
                cookie = cookie.secure(true);
            }
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
        Error::Banned { remaining_secs } => (
            Status::Forbidden,
            format!(
                "Your address is banned from this chat for another {}.",
                describe(Duration::from_secs(*remaining_secs))
            ),
        ),
        Error::TooManyConnections(max) => (
            Status::TooManyRequests,
            format!(
                "There are too many connections from your address (at most \
                 {max}); close one and try again."
            ),
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

/// The login page, with the reason of a refused login when there is one.
pub fn login_page(error: Option<&str>, nick: &str) -> Template {
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
