//! A form body read the forgiving way.
//!
//! Rocket's `Form` rejects a body with invalid UTF-8. Chat text should
//! survive a stray bad byte instead, so this guard decodes every field with
//! replacement characters; a body over the `form` limit is still refused.

use rocket::data::{Data, FromData, Outcome, ToByteUnit};
use rocket::http::Status;
use rocket::request::Request;

/// The fields of an `application/x-www-form-urlencoded` body, decoded
/// lossily.
pub struct LossyForm(Vec<(String, String)>);

impl LossyForm {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a form body was refused.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug when Rocket logs the refusal
pub enum FormError {
    TooLarge,
    Io(std::io::Error),
}

#[rocket::async_trait]
impl<'r> FromData<'r> for LossyForm {
    type Error = FormError;

    async fn from_data(
        req: &'r Request<'_>,
        data: Data<'r>,
    ) -> Outcome<'r, Self> {
        let limit = req.limits().get("form").unwrap_or(32.kibibytes());
        match data.open(limit).into_bytes().await {
            Ok(bytes) if bytes.is_complete() => {
                let fields = form_urlencoded::parse(&bytes.value)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                Outcome::Success(LossyForm(fields))
            }
            Ok(_) => {
                Outcome::Error((Status::PayloadTooLarge, FormError::TooLarge))
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read a form body");
                Outcome::Error((Status::BadRequest, FormError::Io(e)))
            }
        }
    }
}
