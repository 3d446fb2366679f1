//! What unknown paths and refused requests answer.
//!
//! Under `/chat/` every error is the JSON envelope; elsewhere a short
//! plain-text page.

use rocket::http::Status;
use rocket::{Catcher, Request};

use super::api::Envelope;

/// Catchers for the pages.
pub fn page_catchers() -> Vec<Catcher> {
    catchers![page_error]
}

/// Catchers for the API.
pub fn api_catchers() -> Vec<Catcher> {
    catchers![api_error]
}

#[catch(default)]
fn page_error(status: Status, _req: &Request<'_>) -> (Status, String) {
    let text = match status.code {
        403 => "Refused: this request came from another site.".to_string(),
        404 => "Not found.".to_string(),
        413 => "The request body is too large.".to_string(),
        _ => format!("{} {}", status.code, status.reason_lossy()),
    };
    (status, text)
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
