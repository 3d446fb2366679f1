//! The HTTP shell over the room: routes, request guards and catchers.
//!
//! `/chat/...` answers the classic JSON envelope
//! (`{"status":..., "response":...}`) in every case, errors included, so a
//! client never parses anything else; the pages at `/` and `/chat/` are
//! rendered from `templates/`.

mod api;
mod catchers;
mod form;
mod guards;
mod pages;

use std::sync::Arc;

use rocket::fairing::AdHoc;
use rocket::fs::FileServer;
use rocket::http::Header;
use rocket::{Build, Rocket};

use crate::config::Settings;
use crate::room::Room;

pub use api::Envelope;
pub use guards::{host_key, is_cross_site, origin_key, WebPolicy};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "chat_sess";

/// Mounts the routes, catchers and fairings of the web layer.
pub fn stage(settings: &Settings) -> AdHoc {
    let static_dir = settings.static_dir.relative();
    let policy = WebPolicy {
        // crate::rocket refuses a public_origin that is no origin.
        public_origin: settings.public_origin.as_deref().and_then(origin_key),
        secure_cookies: settings.secure_cookies,
    };
    AdHoc::on_ignite("Web", move |rocket: Rocket<Build>| async move {
        rocket
            .manage(policy)
            .mount("/", pages::routes())
            .mount("/", api::routes())
            .mount("/static", FileServer::from(static_dir))
            .register("/", catchers::page_catchers())
            .register("/chat", catchers::api_catchers())
            .attach(no_store())
            .attach(answer_polls_on_shutdown())
    })
}

/// Marks every API answer `Cache-Control: no-store`: browsers otherwise
/// hold identical concurrent GETs (many tabs polling one URL) behind their
/// cache lock.
fn no_store() -> AdHoc {
    AdHoc::on_response("No-store for the API", |req, res| {
        Box::pin(async move {
            if req.uri().path().starts_with("/chat/") {
                res.set_header(Header::new("Cache-Control", "no-store"));
            }
        })
    })
}

/// On shutdown, answers every parked poll with "reconnect" at once instead
/// of letting the connections be cut.
fn answer_polls_on_shutdown() -> AdHoc {
    AdHoc::on_shutdown("Answer parked polls", |rocket| {
        Box::pin(async move {
            if let Some(room) = rocket.state::<Arc<Room>>() {
                tracing::info!("shutting down: answering parked polls");
                room.shut_down();
            }
        })
    })
}
