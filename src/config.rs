//! Natter's settings and their defaults.
//!
//! They are read from the same Figment as Rocket's own (Rocket.toml, then
//! `ROCKET_*` environment variables), so one file configures everything.

use std::path::PathBuf;
use std::time::Duration;

use rocket::figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

/// Every setting Natter reads; missing keys take the defaults below.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The sled directory that holds everything.
    pub data_dir: RelativePathBuf,
    /// Seconds a long poll stays parked before answering "reconnect".
    pub comet_timeout: u64,
    /// Seconds without any request before a session is swept.
    pub max_idle: u64,
    /// Seconds between two idle sweeps.
    pub check_idle_interval: u64,
    /// Events kept per mailbox; older ones are dropped.
    pub mailbox_capacity: u64,
    /// Bytes of sled page cache.
    pub cache_capacity: u64,
    /// Chat lines the room keeps for `/chat/history/` (0 keeps none).
    pub history_on_join: u64,
    /// Directory served under /static/.
    pub static_dir: RelativePathBuf,
    /// SHA-256 of the admin password as 64 hex digits; unset means nobody
    /// can become an administrator. Never logged.
    pub admin_password_sha256: Option<Secret>,
    /// Chat messages one session may send per `rate_limit_window`; 0
    /// turns the limit off.
    pub rate_limit_messages: u32,
    /// Seconds of the rate limit's sliding window.
    pub rate_limit_window: u64,
    /// Live sessions one host may hold at once; 0 turns the cap off.
    pub max_sessions_per_host: u32,
    /// Marks the session cookie Secure even when Rocket does not serve
    /// TLS itself (behind a TLS proxy).
    pub secure_cookies: bool,
    /// The origin browsers see, such as `https://chat.example.org`; when
    /// unset, a request's own Host header is its origin.
    pub public_origin: Option<String>,
}

/// A configured secret: read and written as a plain string, but shown as
/// `<redacted>` by `Debug`, so printing the settings never leaks it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data").into(),
            comet_timeout: 30,
            max_idle: 160,
            check_idle_interval: 60,
            mailbox_capacity: 1000,
            cache_capacity: 64 * 1024 * 1024,
            history_on_join: 50,
            static_dir: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/static"
            ))
            .into(),
            admin_password_sha256: None,
            rate_limit_messages: 10,
            rate_limit_window: 3,
            max_sessions_per_host: 16,
            secure_cookies: false,
            public_origin: None,
        }
    }
}

impl Settings {
    /// The data directory, resolved against Rocket.toml's folder when it
    /// came from there.
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.relative()
    }

    /// How long a long poll may stay parked.
    pub fn comet_timeout(&self) -> Duration {
        Duration::from_secs(self.comet_timeout)
    }

    /// How long a session may stay idle.
    pub fn max_idle(&self) -> Duration {
        Duration::from_secs(self.max_idle)
    }

    /// The sliding window of the rate limit.
    pub fn rate_limit_window(&self) -> Duration {
        Duration::from_secs(self.rate_limit_window)
    }

    /// How often the idle sweep runs (at least once a second).
    pub fn check_idle_interval(&self) -> Duration {
        Duration::from_secs(self.check_idle_interval.max(1))
    }
}
