//! What unknown paths and refused requests answer.
//!
//! Under `/chat/` every error is the JSON envelope; a login form that was
//! refused before its handler ran shows the login page again with the
//! reason; elsewhere a short plain-text page.

use rocket::http::Status;
use rocket::{Catcher, Request};

use super::api::Envelope;
use super::pages::{login_page, Page};

/// Catchers for the pages.
pub fn page_catchers() -> Vec<Catcher> {
    catchers![page_error]
}

/// Catchers for the API.
pub fn api_catchers() -> Vec<Catcher> {
    catchers![api_error]
}

#[catch(default)]
fn page_error(status: Status, req: &Request<'_>) -> Page {
    let login = req.uri().path().as_str().trim_end_matches('/') == "/login";
    if login && status == Status::PayloadTooLarge {
        let reason = "That form was far too large; a nickname is at most \
                      16 letters and digits.";
        return Page::Refused((status, login_page(Some(reason), "")));
    }
    let text = match status.code {
        403 => "Refused: this request came from another site.".to_string(),
        404 => "Not found.".to_string(),
        413 => "The request body is too large.".to_string(),
        _ => format!("{} {}", status.code, status.reason_lossy()),
    };
    Page::Text((status, text))
}

#[catch(default)]
fn api_error(status: Status, _req: &Request<'_>) -> Envelope {
    let code = match status.code {
        400 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        _ => "error",
    };
    Envelope::error(status, code)
}
