//! The one error type of the crate.
//!
//! Storage and decoding failures carry their cause for the log; the web
//! layer turns every variant into a status and a short, plain message, so
//! the cause never reaches a client.

use thiserror::Error;

/// Everything that can go wrong below the web layer.
#[derive(Debug, Error)]
pub enum Error {
    /// sled failed to read or write.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),

    /// A value could not be encoded for storage.
    #[error("encoding error: {0}")]
    Encode(#[from] bincode::Error),

    /// A stored record could not be decoded; names where it lives so an
    /// operator can find it.
    #[error("cannot decode record in tree `{tree}` at key {key}: {cause}")]
    Corrupt {
        tree: &'static str,
        key: String,
        cause: String,
    },

    /// The group-commit flusher reported a failed flush, so the write may
    /// not be on disk and must not be acknowledged.
    #[error("flush to disk failed: {0}")]
    Flush(String),

    /// The configuration could not be read.
    #[error("bad configuration: {0}")]
    Config(String),

    /// The data directory is already open in another process.
    #[error(
        "the data directory {0} is in use by another Natter process; \
         stop it first or choose another data_dir"
    )]
    Locked(String),

    /// The data directory holds something that cannot be read; the
    /// server refuses to start rather than start empty.
    #[error(
        "cannot read the data directory {path}: {why}; refusing to start \
         (restore a backup or move the directory away)"
    )]
    Unreadable { path: String, why: String },

    /// A backup or restore was refused or failed before it copied.
    #[error("{0}")]
    Copy(String),

    /// The mailbox already exists.
    #[error("mailbox {0} already exists")]
    MailboxExists(u64),

    /// The session is unknown, ended or gone.
    #[error("no such session")]
    BadSession,

    /// The nick is empty or has something other than ASCII letters and
    /// digits.
    #[error("nick must be alphanumeric")]
    InvalidNick,

    /// Someone in the room has this nick, ignoring case.
    #[error("nick {0} is not available")]
    NickTaken(String),

    /// The caller's host is banned; the ban ends after this many seconds
    /// (rounded up).
    #[error("this address is banned for another {remaining_secs} s")]
    Banned { remaining_secs: u64 },

    /// The caller's host already holds `max_sessions_per_host` sessions.
    #[error("too many connections from this address (limit {0})")]
    TooManyConnections(u32),

    /// The sender went over the rate limit; the message was not
    /// delivered (the sender was told so in a notice).
    #[error("sending too fast")]
    TooFast,

    /// The server is shutting down and takes no more writes.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Short alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
