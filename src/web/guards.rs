//! Request guards: who is calling and from where.

use std::sync::Arc;

use rocket::request::{FromRequest, Outcome, Request};

use crate::room::Room;
use crate::store::SessionId;

use super::SESSION_COOKIE;

/// The session named by the request's cookie, if it names a live one.
///
/// Never fails: handlers decide what a missing session means (a redirect
/// for pages, `bad_session` for the API).
pub struct Caller(pub Option<SessionId>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Caller {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let session = req
            .rocket()
            .state::<Arc<Room>>()
            .zip(req.cookies().get(SESSION_COOKIE))
            .and_then(|(room, cookie)| room.session_for_token(cookie.value()));
        Outcome::Success(Caller(session))
    }
}

/// The caller's address as bans and caps see it.
///
/// That is the TCP peer unless Rocket's `ip_header` names a proxy header;
/// Natter ships with `ip_header = false` so nobody can pick their own.
pub struct ClientHost(pub String);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientHost {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let host = req
            .client_ip()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Outcome::Success(ClientHost(host))
    }
}
