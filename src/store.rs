//! The only code that touches sled.
//!
//! One sled directory holds everything, in a few trees:
//!
//! - `mailboxes`: every session's events. The key `session` (8 bytes,
//!   big-endian) holds that mailbox's head (its next event id), and the key
//!   `session ++ event id` (16 bytes, big-endian) holds one event. Keeping
//!   the head beside the events lets one sled batch add an event and move
//!   the head atomically, and a range scan from `session ++ N` to
//!   `session ++ u64::MAX` reads the events oldest first without ever
//!   meeting a head.
//! - `clients`: `session` -> the client record (nick, host, token hash).
//! - `bans`: the host's address as UTF-8 bytes -> the ban (expiry,
//!   reason, last nick). Expired bans are never deleted here; the room
//!   ignores and removes them.
//! - `history`: the room's recent chat lines. The empty key holds the next
//!   line id; the key `line id` (8 bytes, big-endian) holds one line, so a
//!   range scan from id 0 reads them oldest first without meeting the head.
//!
//! Values are bincode of versioned enums, so a later release can still read
//! what this one wrote; keys are plain big-endian bytes. The file
//! `natter-format` beside sled's own marks the directory as Natter's and
//! names the record format, so damaged sled files are told apart from a
//! new directory and refused (see [`Store::open`]).
//!
//! Backups are made here as well: [`Store::backup_to`] pauses every writer
//! (see [`Store::writing`]) and copies every tree, whatever its name, into
//! a new sled directory; [`restore`] copies such a directory into an empty
//! data directory. Both go tree by tree through `tree_names`, so trees
//! that later releases add are carried along without a change here. A
//! copy is marked `natter-unfinished` until it is done, and a backup
//! carries the SHA-256 of its sled files, so a cut-short or damaged one
//! is refused rather than opened.
//!
//! Durability is owned here too: [`Store::commit`] waits until one shared
//! flusher thread has made everything written so far durable (group
//! commit). sled 0.34 deadlocks when many tasks call `flush_async` at once,
//! so no other code flushes.

use std::path::{Component, Path, PathBuf};
use std::sync::{
    Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::event::Event;

/// Tree of mailbox heads and events.
pub const MAILBOXES: &str = "mailboxes";
/// Tree of client records.
pub const CLIENTS: &str = "clients";
/// Tree of bans by host.
pub const BANS: &str = "bans";
/// Tree of the room's recent chat lines (scrollback).
pub const HISTORY: &str = "history";
/// The key of the history head (the next line id): empty, so it sorts
/// before every line.
pub const HISTORY_HEAD: &[u8] = b"";

/// A session's id: unique for the life of the data directory.
pub type SessionId = u64;

/// Versioned form of a mailbox head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredHead {
    V1 { next_id: u64 },
}

/// Versioned form of an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredEvent {
    V1(Event),
}

/// Versioned form of one scrollback line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredLine {
    V1 {
        ts_ms: u64,
        nick: String,
        msg: String,
    },
}

/// Versioned form of a client record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredClient {
    V1(ClientRecord),
}

/// Versioned form of a ban.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredBan {
    V1(BanRecord),
}

/// A host that may not log in until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// Unix time in milliseconds when the ban ends.
    pub until_ms: u64,
    /// What the administrator gave as the reason.
    pub reason: String,
    /// The nick that was banned (the last one seen from the host).
    pub nick: String,
    /// Who placed the ban.
    pub by: String,
}

/// What survives a restart about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The nick as it was typed.
    pub nick: String,
    /// The address the session logged in from.
    pub host: String,
    /// SHA-256 of the cookie token; the token itself is never stored.
    pub token_hash: [u8; 32],
    /// Whether the session holds administrator rights.
    pub admin: bool,
    /// Set once the session was ended by the server (idle sweep, kick,
    /// ban): the record stays until its last poll has read why.
    pub ended: Option<Ended>,
}

/// Why and when the server ended a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub reason: String,
    /// Unix time in milliseconds.
    pub at_ms: u64,
}

/// The key of a mailbox head: the session id alone.
pub fn head_key(session: SessionId) -> [u8; 8] {
    session.to_be_bytes()
}

/// The key of one event: session id then event id, both big-endian, so
/// keys sort by session and then by id.
pub fn event_key(session: SessionId, id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&session.to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The key of one scrollback line: its id, big-endian.
pub fn line_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(bincode::serialize(value)?)
}

/// Decodes a stored value, naming the tree and key on failure.
pub fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::Corrupt {
        tree,
        key: hex(key),
        cause: e.to_string(),
    })
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a big-endian u64 from the first 8 bytes of a key.
pub fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The open database and its trees.
pub struct Store {
    db: sled::Db,
    /// The data directory, so a backup is never written into it.
    path: PathBuf,
    /// Mailbox heads and events; see the module doc for the key layout.
    pub mailboxes: sled::Tree,
    /// Client records by session id.
    pub clients: sled::Tree,
    /// Bans by host; read and written through the `ban` methods only.
    bans: sled::Tree,
    /// The room's recent chat lines by line id, and their head.
    pub history: sled::Tree,
    /// Held shared by every write and exclusively by a backup, so a backup
    /// never copies a write half done (sled 0.34 has no snapshots).
    write_gate: RwLock<()>,
    /// No session id below this is handed out: one above every session on
    /// record, so ids stay unique in a directory filled by a restore
    /// (sled's own id counter starts again at 0 there).
    id_floor: Mutex<u64>,
    flusher: Flusher,
}

/// What a backup or restore copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Trees copied, sled's default tree included.
    pub trees: usize,
    /// Key-value pairs copied over all trees.
    pub records: u64,
}

impl Store {
    /// Opens (or creates) the data directory.
    ///
    /// Fails with [`Error::Locked`] when another process has it open, and
    /// with [`Error::Unreadable`] when it holds files but no sled database,
    /// carries a format this release does not know, or carries the format
    /// mark but sled opens it without Natter's trees (wiped or damaged
    /// files); it never falls back to an empty database. Records are
    /// decoded by the callers that load them ([`Error::Corrupt`]).
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Store> {
        check_data_dir(path)?;
        let marked = read_format_mark(path)?;
        let backup = backup_intact(path)?;
        if backup == Some(false) {
            return Err(unreadable(
                path,
                &format!(
                    "it is a backup whose files changed since it was made \
                     (their SHA-256 is not the one in `{DIGEST_FILE}`), so \
                     they are damaged"
                ),
            ));
        }
        let db = open_db(path, cache_capacity)?;
        if !has_natter_trees(&db) && (marked || db.was_recovered()) {
            return Err(unreadable(
                path,
                "sled opened it without Natter's `mailboxes` tree, so its \
                 files are damaged or are not Natter's",
            ));
        }

        let mailboxes = db.open_tree(MAILBOXES)?;
        let clients = db.open_tree(CLIENTS)?;
        let bans = db.open_tree(BANS)?;
        let history = db.open_tree(HISTORY)?;
        if !marked {
            // From now on the directory counts as holding data.
            db.flush()?;
            write_format_mark(path)?;
        }
        if backup.is_some() {
            // From now on sled writes here: it is a data directory.
            std::fs::remove_file(path.join(DIGEST_FILE))
                .map_err(|e| unreadable(path, &e.to_string()))?;
        }
        let id_floor = Mutex::new(first_free_session(&mailboxes, &clients)?);
        let flusher = Flusher::start(db.clone());
        Ok(Store {
            db,
            path: path.to_path_buf(),
            mailboxes,
            clients,
            bans,
            history,
            write_gate: RwLock::new(()),
            id_floor,
            flusher,
        })
    }

    /// Hold this while writing to any tree. Writes under one guard are
    /// seen by a backup either all or not at all. Never hold it across an
    /// `.await`: a backup waits for every guard to drop.
    pub fn writing(&self) -> RwLockReadGuard<'_, ()> {
        // The guard protects no data, so a poisoned lock is still usable.
        self.write_gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every writer until the guard is dropped, for a consistent
    /// copy of all trees.
    pub fn pause_writes(&self) -> RwLockWriteGuard<'_, ()> {
        self.write_gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session id, never handed out before in this directory.
    ///
    /// sled may skip ids after a crash. An id is never that of a session on
    /// record, also after a restore.
    pub fn new_session_id(&self) -> Result<SessionId> {
        let mut floor = self.id_floor.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.db.generate_id()?.max(*floor);
        *floor = id + 1;
        Ok(id)
    }

    /// Marks a write as done in memory and returns the ticket that
    /// [`Store::wait_durable`] takes. Call it after the write was applied,
    /// so that the flush that covers the ticket also covers the write.
    pub fn note_write(&self) -> u64 {
        self.flusher.note_write()
    }

    /// Waits until the write with this ticket is on disk.
    pub async fn wait_durable(&self, ticket: u64) -> Result<()> {
        self.flusher.wait_durable(ticket).await
    }

    /// Makes everything written so far durable.
    pub async fn commit(&self) -> Result<()> {
        let ticket = self.note_write();
        self.wait_durable(ticket).await
    }

    /// The ban stored for `host`, expired or not.
    pub fn ban(&self, host: &str) -> Result<Option<BanRecord>> {
        let Some(bytes) = self.bans.get(host.as_bytes())? else {
            return Ok(None);
        };
        let StoredBan::V1(ban) = decode(BANS, host.as_bytes(), &bytes)?;
        Ok(Some(ban))
    }

    /// Every stored ban, expired ones included, ordered by host.
    pub fn bans(&self) -> Result<Vec<(String, BanRecord)>> {
        let mut bans = Vec::new();
        for item in self.bans.iter() {
            let (key, bytes) = item?;
            let StoredBan::V1(ban) = decode(BANS, &key, &bytes)?;
            bans.push((String::from_utf8_lossy(&key).into_owned(), ban));
        }
        Ok(bans)
    }

    /// Stores (or replaces) the ban of `host`. Call [`Store::commit`]
    /// before telling anyone it holds.
    pub fn put_ban(&self, host: &str, ban: &BanRecord) -> Result<()> {
        let value = encode(&StoredBan::V1(ban.clone()))?;
        let _writing = self.writing();
        self.bans.insert(host.as_bytes(), value)?;
        Ok(())
    }

    /// Removes the ban of `host`; returns whether there was one.
    pub fn remove_ban(&self, host: &str) -> Result<bool> {
        let _writing = self.writing();
        Ok(self.bans.remove(host.as_bytes())?.is_some())
    }

    /// Removes the ban of `host` only if it is still `ban`, so clearing
    /// an expired ban never deletes a new one placed meanwhile.
    pub fn remove_ban_if(&self, host: &str, ban: &BanRecord) -> Result<()> {
        let old = encode(&StoredBan::V1(ban.clone()))?;
        let _writing = self.writing();
        // A failed swap means someone replaced the ban: keep theirs.
        let _ = self.bans.compare_and_swap(
            host.as_bytes(),
            Some(old),
            None::<&[u8]>,
        )?;
        Ok(())
    }

    /// Bytes sled reports on disk, for growth checks.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// Copies every tree into a new sled directory at `dest` (which must
    /// not exist or be empty), flushes it, and only then marks it with the
    /// format file, so an interrupted backup cannot be restored.
    ///
    /// Writers wait while the trees are copied, so the copy holds every
    /// write completed before it began and none half done. It blocks for
    /// the whole copy: call it from a blocking thread.
    pub fn backup_to(&self, dest: &Path) -> Result<CopyReport> {
        check_outside(&self.path, dest)?;
        check_empty_target(dest)?;
        let target = begin_copy(dest)?;
        let report = {
            let _paused = self.pause_writes();
            copy_trees(&self.db, &target)?
        };
        finish_copy(dest, target)?;
        Ok(report)
    }
}

/// The file beside sled's own that marks a directory as Natter's and
/// names the format of its records. A directory with the mark whose sled
/// files open without Natter's trees was damaged, not new.
pub const FORMAT_FILE: &str = "natter-format";

/// The record format this release writes and reads.
pub const FORMAT: u32 = 1;

/// Whether the directory carries the format mark; refuses a format this
/// release does not know.
fn read_format_mark(path: &Path) -> Result<bool> {
    let text = match std::fs::read_to_string(path.join(FORMAT_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(unreadable(path, &e.to_string())),
    };
    match text.trim().parse::<u32>() {
        Ok(FORMAT) => Ok(true),
        Ok(other) => Err(unreadable(
            path,
            &format!(
                "its records are in format {other}, this release reads \
                 format {FORMAT}"
            ),
        )),
        Err(_) => Err(unreadable(
            path,
            &format!("{FORMAT_FILE} does not hold a format number"),
        )),
    }
}

fn write_format_mark(path: &Path) -> Result<()> {
    std::fs::write(path.join(FORMAT_FILE), format!("{FORMAT}\n"))
        .map_err(|e| unreadable(path, &format!("cannot write the mark: {e}")))
}

/// The file a backup or a restore writes into its target first and
/// removes last. A directory that still holds it was cut short: a server
/// refuses to start on it (it would otherwise look like a directory of a
/// server that never got to write its mark), and a restore refuses it.
pub const UNFINISHED_FILE: &str = "natter-unfinished";

/// The file in a backup that holds the SHA-256 of its sled files as they
/// were written. sled reads a damaged file as far as it can and keeps
/// what it read, so a backup is checked against this before it is opened
/// (see [`restore`] and [`Store::open`]).
pub const DIGEST_FILE: &str = "natter-backup-sha256";

/// SHA-256 over sled's files in `dir` (every file except Natter's own
/// `natter-*` ones, in name order, each as its name and its bytes), hex.
pub fn files_digest(dir: &Path) -> Result<String> {
    fn add(
        hasher: &mut Sha256,
        root: &Path,
        dir: &Path,
    ) -> std::io::Result<()> {
        let mut entries = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        entries.sort();
        for path in entries {
            let name = path.strip_prefix(root).unwrap_or(&path);
            if name.to_string_lossy().starts_with("natter-") {
                continue;
            }
            if path.is_dir() {
                add(hasher, root, &path)?;
            } else {
                hasher.update(name.to_string_lossy().as_bytes());
                hasher.update([0]);
                std::io::copy(&mut std::fs::File::open(&path)?, hasher)?;
            }
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    add(&mut hasher, dir, dir).map_err(|e| {
        Error::Copy(format!("cannot read {}: {e}", dir.display()))
    })?;
    Ok(hex(&hasher.finalize()))
}

/// Whether `dir` is a backup whose sled files are still as they were
/// written; `None` when it carries no digest (not a backup).
fn backup_intact(dir: &Path) -> Result<Option<bool>> {
    let Ok(recorded) = std::fs::read_to_string(dir.join(DIGEST_FILE)) else {
        return Ok(None);
    };
    Ok(Some(recorded.trim() == files_digest(dir)?))
}

/// Opens the sled directory a backup or restore fills, marked unfinished.
fn begin_copy(dest: &Path) -> Result<sled::Db> {
    let unfinished = dest.join(UNFINISHED_FILE);
    std::fs::create_dir_all(dest)
        .and_then(|_| {
            std::fs::write(&unfinished, "a copy is being written here\n")
        })
        .map_err(|e| {
            Error::Copy(format!("cannot write into {}: {e}", dest.display()))
        })?;
    open_db(dest, COPY_CACHE)
}

/// Makes a filled copy durable and closes it, records the digest of its
/// files, marks it with the format, and only then removes the unfinished
/// file.
fn finish_copy(dest: &Path, target: sled::Db) -> Result<()> {
    target.flush()?;
    drop(target);
    let digest = files_digest(dest)?;
    std::fs::write(dest.join(DIGEST_FILE), format!("{digest}\n")).map_err(
        |e| Error::Copy(format!("cannot finish {}: {e}", dest.display())),
    )?;
    write_format_mark(dest)?;
    std::fs::remove_file(dest.join(UNFINISHED_FILE)).map_err(|e| {
        Error::Copy(format!("cannot finish {}: {e}", dest.display()))
    })
}

/// Page cache of the sled directory a copy writes or reads.
const COPY_CACHE: u64 = 16 * 1024 * 1024;

/// Copies a backup (or the directory of a stopped server) at `src` into
/// the empty or missing data directory `dest`, and flushes it.
///
/// Refuses a `src` that is not a sled directory or is in use, and a
/// `dest` that holds anything.
pub fn restore(src: &Path, dest: &Path) -> Result<CopyReport> {
    // The mark is written last, so a backup cut short has none, or still
    // has the unfinished file.
    let marked = read_format_mark(src).map_err(about_backup(src))?;
    let complete = src.join("db").is_file()
        && marked
        && !src.join(UNFINISHED_FILE).exists();
    if !complete {
        return Err(Error::Copy(format!(
            "{} is not a Natter backup, or one that was cut short (no sled \
             `db` file or no `{FORMAT_FILE}` mark)",
            src.display()
        )));
    }
    check_empty_target(dest).map_err(|_| {
        Error::Copy(format!(
            "the data directory {} is not empty; stop the server and move \
             it away first, a restore only fills an empty one",
            dest.display()
        ))
    })?;
    if backup_intact(src)? == Some(false) {
        return Err(Error::Copy(format!(
            "the backup at {} is damaged: its files changed since it was \
             made (their SHA-256 is not the one in `{DIGEST_FILE}`)",
            src.display()
        )));
    }

    // sled writes to a directory it opens, so it opens a copy: the backup
    // stays as it was. The copy would not be locked, so first make sure
    // no server holds the source (sled locks its `db` file with flock).
    let db = std::fs::File::open(src.join("db")).map_err(|e| {
        Error::Copy(format!("cannot read the backup {}: {e}", src.display()))
    })?;
    if db.try_lock().is_err() {
        return Err(Error::Locked(src.display().to_string()));
    }
    let scratch = scratch_copy(src, dest)?;
    drop(db);
    let copied = copy_from(scratch.path(), src, dest);
    drop(scratch);
    copied
}

/// A copy of the backup at `src` in a temporary directory beside `dest`,
/// removed when dropped.
fn scratch_copy(src: &Path, dest: &Path) -> Result<tempfile::TempDir> {
    let beside = std::path::absolute(dest)
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    let failed = |e: std::io::Error| {
        Error::Copy(format!("cannot copy the backup {}: {e}", src.display()))
    };
    std::fs::create_dir_all(&beside).map_err(failed)?;
    let scratch = tempfile::Builder::new()
        .prefix(".natter-restore-")
        .tempdir_in(&beside)
        .map_err(failed)?;
    copy_dir(src, scratch.path()).map_err(failed)?;
    Ok(scratch)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Words an unreadable source as the backup it is, not as a data directory
/// the server refuses to start on.
fn about_backup(src: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Unreadable { why, .. } => Error::Copy(format!(
            "the backup at {} cannot be read: {why}",
            src.display()
        )),
        other => other,
    }
}

/// Fills `dest` from the sled directory at `source`, a copy of the backup
/// at `src` (named in errors).
fn copy_from(source: &Path, src: &Path, dest: &Path) -> Result<CopyReport> {
    let source = open_db(source, COPY_CACHE).map_err(about_backup(src))?;
    if !has_natter_trees(&source) {
        return Err(Error::Copy(format!(
            "the backup at {} cannot be read: sled opened it without \
             Natter's `{MAILBOXES}` tree, so its files are damaged",
            src.display()
        )));
    }
    let target = begin_copy(dest)?;
    let report = copy_trees(&source, &target)?;
    finish_copy(dest, target)?;
    Ok(report)
}

/// Backs up the data directory of a stopped server: opens it (which fails
/// with [`Error::Locked`] while a server runs) and copies it to `dest`.
pub fn backup_stopped(data: &Path, dest: &Path) -> Result<CopyReport> {
    if !data.join("db").is_file() {
        return Err(Error::Copy(format!(
            "there is no Natter data directory at {}",
            data.display()
        )));
    }
    check_outside(data, dest)?;
    Store::open(data, COPY_CACHE)?.backup_to(dest)
}

/// How often sled's background thread wakes, in milliseconds.
///
/// Each wake-up also moves the live pages out of at most one mostly-dead
/// segment of sled's file (sled 0.34's cleaner stops at the end of a
/// segment's page list), and only a cleaned segment can be reused or cut
/// off the end of the file. At sled's default of 500 ms that is two
/// segments a second, far behind a busy server, so under join and leave
/// churn the file wandered between 9 and 30 MB around a few KiB of live
/// data; at 20 ms it stayed at 2.5 to 5 MB (see `tests/churn.rs`). An
/// idle server pays 50 fsyncs a second of a file with nothing to write,
/// and the load benchmark showed no change in latency or throughput.
const SLED_WAKE_EVERY_MS: u64 = 20;

/// Whether the database holds Natter's trees (a new one does not yet).
fn has_natter_trees(db: &sled::Db) -> bool {
    db.tree_names()
        .iter()
        .any(|name| name.as_ref() == MAILBOXES.as_bytes())
}

/// Opens a sled directory, telling a lock held by another process apart
/// from other failures. sled 0.34's `Mode` is not set: it is stored but
/// never read, so `LowSpace` changed nothing.
fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity)
        .flush_every_ms(Some(SLED_WAKE_EVERY_MS));
    // sled 0.34 panics on some damaged files instead of failing. The
    // config is not used again after a panic, so nothing half-changed is
    // seen.
    let open = std::panic::AssertUnwindSafe(|| config.open());
    let opened = std::panic::catch_unwind(open);
    let Ok(opened) = opened else {
        return Err(unreadable(
            path,
            "sled failed while reading its files (see the panic message \
             above), so they are damaged",
        ));
    };
    opened.map_err(|e| match &e {
        sled::Error::Io(io)
            if io.to_string().contains("could not acquire lock") =>
        {
            Error::Locked(path.display().to_string())
        }
        sled::Error::Io(_) => Error::Storage(e),
        _ => unreadable(path, &e.to_string()),
    })
}

fn unreadable(path: &Path, why: &str) -> Error {
    Error::Unreadable {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Refuses a directory that a backup or restore did not finish, and one
/// that holds files but no sled database: sled would otherwise start an
/// empty one beside them.
fn check_data_dir(path: &Path) -> Result<()> {
    if path.join(UNFINISHED_FILE).exists() {
        return Err(unreadable(
            path,
            &format!(
                "it holds a backup or restore that was cut short \
                 (`{UNFINISHED_FILE}` is still there); make it again"
            ),
        ));
    }
    if !path.exists() || path.join("db").is_file() {
        return Ok(());
    }
    if path.join(FORMAT_FILE).is_file() {
        return Err(unreadable(path, "its sled `db` file is missing"));
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| unreadable(path, &e.to_string()))?;
    if entries.count() > 0 {
        return Err(unreadable(path, "it holds files but no sled `db` file"));
    }
    Ok(())
}

/// Refuses a backup target inside the data directory, however it is
/// spelled: through `..`, a symbolic link or a relative path.
fn check_outside(data: &Path, dest: &Path) -> Result<()> {
    let inside = match (resolved(data), resolved(dest)) {
        (Some(data), Some(dest)) => dest.starts_with(data),
        // A path that cannot be resolved cannot be written to either.
        _ => false,
    };
    if inside {
        return Err(Error::Copy(format!(
            "{} is inside the data directory; back up to somewhere else",
            dest.display()
        )));
    }
    Ok(())
}

/// `path` as the file system will see it: the longest part that exists
/// with every link and `..` resolved, then the rest (which cannot hold a
/// link, as it does not exist yet) with its `..` taken literally.
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut existing = std::path::absolute(path).ok()?;
    let mut missing = Vec::new();
    let mut out = loop {
        match existing.canonicalize() {
            Ok(real) => break real,
            Err(_) => {
                let last = existing.components().next_back()?;
                missing.push(PathBuf::from(last.as_os_str()));
                existing = existing.parent()?.to_path_buf();
            }
        }
    };
    for part in missing.iter().rev() {
        match part.components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::Normal(name)) => out.push(name),
            _ => {}
        }
    }
    Some(out)
}

/// A copy goes only into a directory that is missing or empty.
fn check_empty_target(dest: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dest) else {
        if dest.exists() {
            return Err(Error::Copy(format!(
                "{} exists and is not a readable directory",
                dest.display()
            )));
        }
        return Ok(());
    };
    if entries.next().is_some() {
        return Err(Error::Copy(format!(
            "{} is not empty; choose a new or empty directory",
            dest.display()
        )));
    }
    Ok(())
}

/// Copies every tree of `from` into `to`, in batches.
fn copy_trees(from: &sled::Db, to: &sled::Db) -> Result<CopyReport> {
    const BATCH: usize = 4096;
    let mut report = CopyReport {
        trees: 0,
        records: 0,
    };
    for name in from.tree_names() {
        let source = from.open_tree(&name)?;
        let target = to.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in source.iter() {
            let (key, value) = item?;
            batch.insert(key, value);
            pending += 1;
            if pending == BATCH {
                target.apply_batch(std::mem::take(&mut batch))?;
                report.records += pending as u64;
                pending = 0;
            }
        }
        target.apply_batch(batch)?;
        report.records += pending as u64;
        report.trees += 1;
    }
    Ok(report)
}

/// One more than the highest session id on record in either tree.
fn first_free_session(
    mailboxes: &sled::Tree,
    clients: &sled::Tree,
) -> Result<SessionId> {
    let mut floor = 0;
    for tree in [mailboxes, clients] {
        if let Some((key, _)) = tree.last()? {
            if let Some(session) = be_u64(&key) {
                floor = floor.max(session.saturating_add(1));
            }
        }
    }
    Ok(floor)
}

impl Drop for Store {
    fn drop(&mut self) {
        self.flusher.stop();
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// How far durability has got, as seen by waiting writers.
#[derive(Debug, Clone, Copy, Default)]
struct Durable {
    /// Every ticket up to this one is on disk.
    upto: u64,
    /// The last flush failed; tickets above `upto` cannot be confirmed.
    failed: bool,
}

struct FlushState {
    /// The highest ticket handed out.
    written: u64,
    stop: bool,
}

/// One thread that flushes on behalf of every writer (group commit).
///
/// Writers take a ticket after applying their write and wait until the
/// flusher reports a flush that started after the ticket was taken.
struct Flusher {
    state: Arc<(Mutex<FlushState>, Condvar)>,
    durable: watch::Sender<Durable>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(db: sled::Db) -> Flusher {
        let state = Arc::new((
            Mutex::new(FlushState {
                written: 0,
                stop: false,
            }),
            Condvar::new(),
        ));
        let (durable, _) = watch::channel(Durable::default());
        let thread_state = state.clone();
        let thread_durable = durable.clone();
        let thread = std::thread::Builder::new()
            .name("natter-flusher".into())
            .spawn(move || flush_loop(db, &thread_state, &thread_durable))
            .expect("the OS refused to start the flusher thread");
        Flusher {
            state,
            durable,
            thread: Some(thread),
        }
    }

    fn note_write(&self) -> u64 {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        state.written += 1;
        wake.notify_one();
        state.written
    }

    async fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut seen = self.durable.subscribe();
        let result = seen
            .wait_for(|d| d.upto >= ticket || d.failed)
            .await
            .map(|d| *d);
        match result {
            Ok(d) if d.upto >= ticket => Ok(()),
            Ok(_) => Err(Error::Flush("see the log for the cause".into())),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    fn stop(&mut self) {
        {
            let (lock, wake) = &*self.state;
            let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
            state.stop = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flush_loop(
    db: sled::Db,
    state: &(Mutex<FlushState>, Condvar),
    durable: &watch::Sender<Durable>,
) {
    let (lock, wake) = state;
    let mut flushed = 0;
    loop {
        // Sleep until a writer took a ticket the last flush did not cover.
        let target = {
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            while guard.written == flushed && !guard.stop {
                guard = wake.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
            if guard.written == flushed {
                return;
            }
            guard.written
        };

        // Everything applied before `target` was taken is covered now.
        match db.flush() {
            Ok(_) => {
                flushed = target;
                durable.send_replace(Durable {
                    upto: target,
                    failed: false,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "flush to disk failed");
                durable.send_modify(|d| d.failed = true);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
