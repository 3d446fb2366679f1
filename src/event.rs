//! The events a mailbox carries and how they look on the wire.
//!
//! An event is stored without its id (the id lives in the key) and is
//! shown to clients as `{"id":N,"t":"chat_msg","d":{...},"ts":<unix ms>}`,
//! the shape the classic Comet clients read.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What happened, with the server time it happened at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    pub kind: EventKind,
}

/// The kinds of event the room produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    UserJoinedRoom {
        nick: String,
    },
    UserLeftRoom {
        nick: String,
        reason: String,
    },
    /// A message from someone else.
    ChatMsg {
        nick: String,
        msg: String,
    },
    /// The sender's own message, echoed back to them.
    SentChatMsg {
        nick: String,
        msg: String,
    },
    SystemMsg {
        text: String,
    },
    AdminLoggedIn {
        nick: String,
    },
    AdminLoggedOut {
        nick: String,
    },
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(kind: EventKind) -> Event {
        Event {
            ts_ms: unix_ms(),
            kind,
        }
    }

    /// The wire name of the event's kind.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EventKind::UserJoinedRoom { .. } => "user_joined_room",
            EventKind::UserLeftRoom { .. } => "user_left_room",
            EventKind::ChatMsg { .. } => "chat_msg",
            EventKind::SentChatMsg { .. } => "sent_chat_msg",
            EventKind::SystemMsg { .. } => "system_msg",
            EventKind::AdminLoggedIn { .. } => "admin_logged_in",
            EventKind::AdminLoggedOut { .. } => "admin_logged_out",
        }
    }

    /// The JSON a client receives for this event under the given id.
    pub fn to_json(&self, id: u64) -> Value {
        let data = match &self.kind {
            EventKind::UserJoinedRoom { nick }
            | EventKind::AdminLoggedIn { nick }
            | EventKind::AdminLoggedOut { nick } => json!(nick),
            EventKind::UserLeftRoom { nick, reason } => {
                json!({ "nick": nick, "reason": reason })
            }
            EventKind::ChatMsg { nick, msg }
            | EventKind::SentChatMsg { nick, msg } => {
                json!({ "nick": nick, "msg": msg })
            }
            EventKind::SystemMsg { text } => json!(text),
        };
        json!({ "id": id, "t": self.type_name(), "d": data, "ts": self.ts_ms })
    }
}

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An event with its wire JSON rendered once.
///
/// A broadcast hands one of these (behind an `Arc`) to every mailbox it
/// reaches, so a thousand woken polls copy one string instead of each
/// building and serialising its own JSON tree. It reads as the [`Event`]
/// it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    event: Event,
    /// The event's JSON object without its `id` member, e.g.
    /// `{"d":...,"t":"chat_msg","ts":...}`.
    json: Box<str>,
}

impl Rendered {
    /// Renders `event` once.
    pub fn new(event: Event) -> Rendered {
        let mut value = event.to_json(0);
        if let Some(object) = value.as_object_mut() {
            object.remove("id");
        }
        let json = value.to_string().into_boxed_str();
        Rendered { event, json }
    }

    /// Appends the event's JSON under `id` to `out`: the same object
    /// [`Event::to_json`] gives, with `id` as its first member.
    pub fn write_json(&self, id: u64, out: &mut String) {
        use std::fmt::Write;
        // `json` always starts with '{' and holds other members after it.
        let _ = write!(out, "{{\"id\":{id},{}", &self.json[1..]);
    }
}

impl std::ops::Deref for Rendered {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}
