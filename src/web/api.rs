//! The long-poll JSON API under `/chat/`.
//!
//! Every answer is the envelope `{"status":"ok"|"error","response":...}`.
//! A missing or dead session is HTTP 200 with `bad_session`, because the
//! classic clients only read 2xx answers.

use std::sync::Arc;

use rocket::http::{ContentType, CookieJar, Status};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket::{Request, Route, State};
use serde_json::{json, Value};

use super::form::LossyForm;
use super::guards::{Caller, SameSite};
use super::SESSION_COOKIE;
use crate::error::{Error, Result};
use crate::mailbox::Delivery;
use crate::room::{Room, WaitAnswer};
use crate::store::SessionId;

/// The JSON envelope every `/chat/` answer uses.
#[derive(Debug)]
pub struct Envelope {
    status: Status,
    body: Value,
    /// The body already serialised; sent instead of `body` when set.
    text: Option<String>,
}

impl Envelope {
    /// `{"status":"ok","response":<response>}` with HTTP 200.
    pub fn ok(response: Value) -> Envelope {
        Envelope {
            status: Status::Ok,
            body: json!({ "status": "ok", "response": response }),
            text: None,
        }
    }

    /// `{"status":"error","response":"<code>"}` with the given status.
    pub fn error(status: Status, code: &str) -> Envelope {
        Envelope {
            status,
            body: json!({ "status": "error", "response": code }),
            text: None,
        }
    }

    /// The answer for a call without a live session.
    pub fn bad_session() -> Envelope {
        Envelope::error(Status::Ok, "bad_session")
    }

    /// Events, with the gap marker when older ones were dropped.
    ///
    /// Written straight from each event's pre-rendered JSON: a broadcast
    /// wakes every parked poll, and building a JSON tree per poll was a
    /// large part of the cost of answering it.
    fn events(delivery: Delivery) -> Envelope {
        let mut text = String::with_capacity(64 + 160 * delivery.events.len());
        text.push_str(r#"{"status":"ok","response":["#);
        for (index, (id, event)) in delivery.events.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            event.write_json(*id, &mut text);
        }
        text.push(']');
        if let Some((from, to)) = delivery.gap {
            text.push_str(&format!(r#","gap":{{"from":{from},"to":{to}}}"#));
        }
        text.push('}');
        Envelope {
            status: Status::Ok,
            body: Value::Null,
            text: Some(text),
        }
    }
}

impl From<Error> for Envelope {
    fn from(error: Error) -> Envelope {
        match error {
            Error::BadSession => Envelope::bad_session(),
            Error::TooFast => {
                Envelope::error(Status::TooManyRequests, "too_fast")
            }
            Error::ShuttingDown => {
                Envelope::error(Status::ServiceUnavailable, "shutting_down")
            }
            other => {
                tracing::error!(error = %other, "request failed");
                Envelope::error(Status::ServiceUnavailable, "storage_error")
            }
        }
    }
}

impl<'r> Responder<'r, 'static> for Envelope {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut response = match self.text {
            Some(text) => (ContentType::JSON, text).respond_to(req)?,
            None => Json(self.body).respond_to(req)?,
        };
        response.set_status(self.status);
        Ok(response)
    }
}

/// The routes of the API.
pub fn routes() -> Vec<Route> {
    routes![start, online, history, wait, send_msg, leave_get, leave_post]
}

/// Answers a read-only call: `read` runs for the caller's session and
/// what it gives becomes the `response`; bad_session without a session.
fn answer<T: serde::Serialize>(
    caller: Caller,
    read: impl FnOnce(SessionId) -> Result<T>,
) -> Envelope {
    let Caller(Some(session)) = caller else {
        return Envelope::bad_session();
    };
    match read(session) {
        Ok(value) => Envelope::ok(json!(value)),
        Err(e) => e.into(),
    }
}

/// The id to start waiting from.
#[get("/chat/start")]
fn start(room: &State<Arc<Room>>, caller: Caller) -> Envelope {
    answer(caller, |session| room.current_id(session))
}

/// The nicks in the room.
#[get("/chat/online")]
fn online(room: &State<Arc<Room>>, caller: Caller) -> Envelope {
    answer(caller, |session| room.users(session))
}

/// The room's recent chat lines, oldest first, as chat_msg events.
#[get("/chat/history")]
fn history(room: &State<Arc<Room>>, caller: Caller) -> Envelope {
    answer(caller, |session| {
        let lines = room.history(session)?;
        Ok(lines
            .iter()
            .map(|(id, e)| e.to_json(*id))
            .collect::<Vec<_>>())
    })
}

/// The long poll: events with id >= msg_id, as soon as there are any.
#[get("/chat/wait?<msg_id>")]
async fn wait(
    room: &State<Arc<Room>>,
    caller: Caller,
    msg_id: Option<&str>,
) -> Envelope {
    let Some(msg_id) = msg_id.and_then(parse_msg_id) else {
        return Envelope::error(Status::BadRequest, "bad_msg_id");
    };
    let Caller(Some(session)) = caller else {
        return Envelope::bad_session();
    };
    match room.wait(session, msg_id).await {
        Ok(WaitAnswer::Events(delivery)) => Envelope::events(delivery),
        Ok(WaitAnswer::Reconnect) => Envelope::ok(json!("reconnect")),
        Ok(WaitAnswer::BadSession) => Envelope::bad_session(),
        Ok(WaitAnswer::Resync) => Envelope::error(Status::Ok, "resync"),
        Err(e) => e.into(),
    }
}

/// A non-negative integer that fits a u64, digits only (no sign, no
/// spaces).
fn parse_msg_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Says something in the room, or runs a command typed in the chat box.
/// Refused with 403 when a browser sends it from another site.
#[post("/chat/send_msg", data = "<form>")]
async fn send_msg(
    _same_site: SameSite,
    room: &State<Arc<Room>>,
    caller: Caller,
    form: LossyForm,
) -> Envelope {
    let Caller(Some(session)) = caller else {
        return Envelope::bad_session();
    };
    let Some(msg) = form.get("msg") else {
        return Envelope::error(Status::BadRequest, "missing_msg");
    };
    match room.chat_message(session, msg).await {
        Ok(()) => Envelope::ok(json!("")),
        Err(e) => e.into(),
    }
}

/// Leaves the room with reason "normal" and drops the cookie (403 from
/// another site).
#[get("/chat/leave")]
async fn leave_get(
    _same_site: SameSite,
    room: &State<Arc<Room>>,
    caller: Caller,
    cookies: &CookieJar<'_>,
) -> Envelope {
    leave(room, caller, cookies).await
}

/// Same as the GET form, for clients that post.
#[post("/chat/leave")]
async fn leave_post(
    _same_site: SameSite,
    room: &State<Arc<Room>>,
    caller: Caller,
    cookies: &CookieJar<'_>,
) -> Envelope {
    leave(room, caller, cookies).await
}

async fn leave(
    room: &Room,
    caller: Caller,
    cookies: &CookieJar<'_>,
) -> Envelope {
    let Caller(Some(session)) = caller else {
        return Envelope::bad_session();
    };
    cookies.remove(SESSION_COOKIE);
    match room.leave(session, "normal").await {
        Ok(()) => Envelope::ok(json!("")),
        Err(e) => e.into(),
    }
}
