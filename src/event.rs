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
