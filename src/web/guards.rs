//! Request guards: who is calling, from where, and from which site.

use std::sync::Arc;

use rocket::http::Status;
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

/// How the web layer checks origins and marks cookies; managed state.
#[derive(Debug, Clone, Default)]
pub struct WebPolicy {
    /// The configured public origin, normalised (see [`origin_key`]).
    pub public_origin: Option<String>,
    /// Whether to mark the session cookie Secure.
    pub secure_cookies: bool,
}

/// Passes only requests a browser did not send from another site; any
/// state-changing route takes it first, so a refused request never reads
/// its body and changes nothing.
///
/// Refused (403): `Sec-Fetch-Site` present and neither `same-origin` nor
/// `none`, or `Origin` present and not the server's own origin (the
/// configured `public_origin`, else the request's `Host`). A request with
/// neither header (curl, scripts) passes.
pub struct SameSite;

/// Why [`SameSite`] refused a request.
#[derive(Debug)]
pub struct CrossSite;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameSite {
    type Error = CrossSite;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let headers = req.headers();
        let fetch_site = headers.get_one("Sec-Fetch-Site");
        let origin = headers.get_one("Origin");
        let policy = req.rocket().state::<WebPolicy>();
        let own = policy
            .and_then(|p| p.public_origin.clone())
            .or_else(|| headers.get_one("Host").map(host_key));
        if is_cross_site(fetch_site, origin, own.as_deref()) {
            tracing::warn!(
                path = %req.uri().path(),
                fetch_site = fetch_site.unwrap_or("-"),
                origin = origin.unwrap_or("-"),
                "cross-site request refused"
            );
            return Outcome::Error((Status::Forbidden, CrossSite));
        }
        Outcome::Success(SameSite)
    }
}

/// The rule of [`SameSite`], on the header values; `own` is the server's
/// origin as [`host_key`] or [`origin_key`] gives it.
pub fn is_cross_site(
    fetch_site: Option<&str>,
    origin: Option<&str>,
    own: Option<&str>,
) -> bool {
    if let Some(site) = fetch_site {
        let site = site.trim();
        let same = site.eq_ignore_ascii_case("same-origin")
            || site.eq_ignore_ascii_case("none");
        if !same {
            return true;
        }
    }
    match origin {
        None => false,
        Some(origin) => match (origin_key(origin), own) {
            (Some(origin), Some(own)) => origin != own,
            _ => true,
        },
    }
}

/// An origin (`scheme://host[:port]`) reduced to what is compared: the
/// lower-cased host and port, with the scheme's default port dropped.
/// The scheme itself is not compared, because behind a TLS proxy the
/// server cannot tell which one the browser used. `None` for anything
/// that is not such an origin (`null`, a path, no scheme).
pub fn origin_key(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, authority) = origin.split_once("://")?;
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    Some(
        authority
            .strip_suffix(default)
            .unwrap_or(&authority)
            .to_string(),
    )
}

/// A Host header reduced like [`origin_key`] (default ports dropped).
pub fn host_key(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    for default in [":80", ":443"] {
        if let Some(bare) = host.strip_suffix(default) {
            return bare.to_string();
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cross-site rule: same-origin and none pass, other fetch sites
    /// fail; an Origin must match the server's; no headers pass.
    #[test]
    fn cross_site_requests_are_recognised() {
        let own = Some("chat.example:8000");
        assert!(!is_cross_site(None, None, own));
        assert!(!is_cross_site(Some("same-origin"), None, own));
        assert!(!is_cross_site(Some("none"), None, None));
        for site in ["cross-site", "same-site", "bogus", ""] {
            assert!(is_cross_site(Some(site), None, own), "{site}");
        }
        assert!(!is_cross_site(None, Some("http://Chat.example:8000"), own));
        for origin in [
            "http://evil.example",
            "http://chat.example:8001",
            "null",
            "chat.example:8000",
            "http://chat.example:8000@evil.example",
        ] {
            assert!(is_cross_site(None, Some(origin), own), "{origin}");
        }
        assert!(is_cross_site(None, Some("http://a.example"), None));
    }

    /// Default ports are dropped on both sides.
    #[test]
    fn default_ports_are_dropped() {
        assert_eq!(
            origin_key("https://a.example:443/"),
            Some("a.example".into())
        );
        assert_eq!(origin_key("http://a.example:80"), Some("a.example".into()));
        assert_eq!(host_key("A.example:443"), "a.example");
        assert_eq!(origin_key("ftp://a.example"), None);
    }
}
