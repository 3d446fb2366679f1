//! The one shared room: who is in it, their nicknames, and what they say.
//!
//! The room keeps its roster in memory (rebuilt from the `clients` tree at
//! start-up) and writes every change to the store before answering, so a
//! restart keeps sessions, nicks and pending events. What changes on every
//! request, the time of a session's last action, stays in memory only.
//!
//! A session ends in one of two ways. `leave` forgets it at once. When the
//! server ends it (the idle sweep), the session keeps its mailbox with a
//! final notice that says why: the next wait returns that notice and only
//! then is the session forgotten, so the user learns what happened.
//!
//! Commands typed in the chat box, bans and the per-host cap live in the
//! [`moderation`] submodule.

mod moderation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::command;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::event::{unix_ms, Event, EventKind};
use crate::history::History;
use crate::limits::RateWindow;
use crate::mailbox::{Delivery, Letter, PostOffice, Recipients, WaitOutcome};
use crate::store::{
    be_u64, decode, encode, head_key, ClientRecord, Ended, SessionId, Store,
    StoredClient, CLIENTS,
};

/// Longest nick kept, in characters.
pub const NICK_MAX_CHARS: usize = 16;
/// Longest chat message kept, in characters.
pub const MSG_MAX_CHARS: usize = 256;
/// Longest leave reason kept, in characters.
pub const REASON_MAX_CHARS: usize = 32;

/// A fresh session: the token goes into the cookie, the id stays inside.
#[derive(Debug, Clone)]
pub struct Joined {
    pub session: SessionId,
    /// 64 hex characters from the OS RNG; only its SHA-256 is stored.
    pub token: String,
    /// The nick as it was accepted (trimmed and cut).
    pub nick: String,
}

/// What a wait answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitAnswer {
    /// Events with id >= the asked id, oldest first.
    Events(Delivery),
    /// Nothing arrived in time, or the server is going down: ask again.
    Reconnect,
    /// The session does not exist (any more).
    BadSession,
    /// The asked id is beyond the mailbox: start over from /chat/start/.
    Resync,
}

struct Client {
    record: ClientRecord,
    last_action: Instant,
    /// False until the join is complete (stored, and checked against a
    /// ban placed meanwhile); moderation only acts on joined sessions.
    joined: bool,
    /// Recent chat messages, for the rate limit.
    sent: RateWindow,
}

impl Client {
    fn new(record: ClientRecord, joined: bool) -> Client {
        Client {
            record,
            last_action: Instant::now(),
            joined,
            sent: RateWindow::default(),
        }
    }
}

#[derive(Default)]
struct Roster {
    clients: HashMap<SessionId, Client>,
    by_token: HashMap<[u8; 32], SessionId>,
    /// Lower-cased nicks of the sessions still in the room.
    by_nick: HashMap<String, SessionId>,
}

/// The room, its members and their mailboxes.
pub struct Room {
    store: Arc<Store>,
    office: PostOffice,
    history: History,
    roster: Mutex<Roster>,
    comet_timeout: Duration,
    max_idle: Duration,
    moderation: moderation::Moderation,
}

impl Room {
    /// Opens the data directory and restores every session.
    ///
    /// Restored sessions get a full idle period from now.
    pub fn open(settings: &Settings) -> Result<Arc<Room>> {
        let path = settings.data_path();
        let store = Arc::new(Store::open(&path, settings.cache_capacity)?);
        let office =
            PostOffice::load(store.clone(), settings.mailbox_capacity)?;
        let roster = load_roster(&store, &office)?;
        let history = History::load(store.clone(), settings.history_on_join)?;
        Ok(Arc::new(Room {
            store,
            office,
            history,
            roster: Mutex::new(roster),
            comet_timeout: settings.comet_timeout(),
            max_idle: settings.max_idle(),
            moderation: moderation::Moderation::new(settings)?,
        }))
    }

    fn roster(&self) -> MutexGuard<'_, Roster> {
        // Every roster change is a handful of map inserts and removes that
        // cannot panic halfway, so a poisoned lock is still consistent.
        self.roster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The post office, for code and tests that work on mailboxes.
    pub fn post_office(&self) -> &PostOffice {
        &self.office
    }

    /// The store, for backups and checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Joins the room under `nick` from `host`.
    ///
    /// The nick is trimmed and cut to 16 characters; it must be ASCII
    /// letters and digits and not in use by anyone, ignoring case. A
    /// banned host, or one that holds `max_sessions_per_host` sessions
    /// already, is refused.
    pub async fn join(&self, nick: &str, host: &str) -> Result<Joined> {
        self.join_replacing(nick, host, None).await
    }

    /// Joins like [`Room::join`] on behalf of a browser that still holds
    /// the live session `replacing`, which the caller ends once the join
    /// succeeded: that session does not count against its host's cap, so
    /// logging in again from a full address works. Its nick stays taken
    /// until it has left.
    pub async fn join_replacing(
        &self,
        nick: &str,
        host: &str,
        replacing: Option<SessionId>,
    ) -> Result<Joined> {
        let nick = clean_nick(nick)?;
        self.check_ban(host)?;
        let session = self.store.new_session_id()?;
        let token = new_token();
        let record = ClientRecord {
            nick: nick.clone(),
            host: host.to_string(),
            token_hash: hash_token(&token),
            admin: false,
            ended: None,
        };

        self.reserve(session, &record, replacing)?;
        let stored = match self.persist_new(session, &record).await {
            Ok(()) => self.complete_join(session, host),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            self.abandon_join(session).await;
            return Err(e);
        }

        let joined =
            Event::now(EventKind::UserJoinedRoom { nick: nick.clone() });
        self.office.broadcast(joined, &[session]).await?;
        tracing::info!(%nick, %host, "joined");
        Ok(Joined {
            session,
            token,
            nick,
        })
    }

    /// Claims the nick in memory so that two joins cannot both get it.
    fn reserve(
        &self,
        session: SessionId,
        record: &ClientRecord,
        replacing: Option<SessionId>,
    ) -> Result<()> {
        let mut roster = self.roster();
        let key = record.nick.to_ascii_lowercase();
        if roster.by_nick.contains_key(&key) {
            return Err(Error::NickTaken(record.nick.clone()));
        }
        self.check_host_cap(&roster, &record.host, replacing)?;
        roster.by_nick.insert(key, session);
        roster.by_token.insert(record.token_hash, session);
        roster
            .clients
            .insert(session, Client::new(record.clone(), false));
        Ok(())
    }

    async fn persist_new(
        &self,
        session: SessionId,
        record: &ClientRecord,
    ) -> Result<()> {
        let value = encode(&StoredClient::V1(record.clone()))?;
        {
            let _writing = self.store.writing();
            self.store.clients.insert(head_key(session), value)?;
        }
        self.office.create(session).await?;
        Ok(())
    }

    /// Drops a session from the roster; returns its record if it had one.
    fn forget(&self, session: SessionId) -> Option<ClientRecord> {
        let mut roster = self.roster();
        let client = roster.clients.remove(&session)?;
        roster.by_token.remove(&client.record.token_hash);
        let key = client.record.nick.to_ascii_lowercase();
        if roster.by_nick.get(&key) == Some(&session) {
            roster.by_nick.remove(&key);
        }
        Some(client.record)
    }

    /// The session a cookie token belongs to, if any (ended sessions
    /// included, until their final notice was read).
    pub fn session_for_token(&self, token: &str) -> Option<SessionId> {
        self.roster().by_token.get(&hash_token(token)).copied()
    }

    /// Whether the session is in the room (not ended, not gone).
    pub fn is_active(&self, session: SessionId) -> bool {
        self.roster()
            .clients
            .get(&session)
            .is_some_and(|c| c.record.ended.is_none())
    }

    /// The nick of a session in the room.
    pub fn nick(&self, session: SessionId) -> Option<String> {
        let roster = self.roster();
        let client = roster.clients.get(&session)?;
        client
            .record
            .ended
            .is_none()
            .then(|| client.record.nick.clone())
    }

    /// Notes that a session did something, for the idle sweep.
    fn touch(&self, session: SessionId) -> bool {
        let mut roster = self.roster();
        match roster.clients.get_mut(&session) {
            Some(client) if client.record.ended.is_none() => {
                client.last_action = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Leaves the room. Leaving twice, or with an unknown session, is
    /// harmless. The others are told, with the reason cut to 32
    /// characters, and parked polls of the session answer bad_session.
    pub async fn leave(&self, session: SessionId, reason: &str) -> Result<()> {
        let Some(record) = self.forget(session) else {
            return Ok(());
        };
        {
            let _writing = self.store.writing();
            self.store.clients.remove(head_key(session))?;
        }
        self.office.delete(session).await?;
        if record.ended.is_none() {
            let reason = cut(reason, REASON_MAX_CHARS);
            tracing::info!(nick = %record.nick, %reason, "left");
            let left = Event::now(EventKind::UserLeftRoom {
                nick: record.nick,
                reason,
            });
            self.office.broadcast(left, &[session]).await?;
        }
        Ok(())
    }

    /// Says something in the room: the others get chat_msg, the sender
    /// sent_chat_msg. The text is cut to 256 characters; an empty (or
    /// all-blank) message is ignored. Over the rate limit nothing is sent
    /// but a notice to the sender, and the call fails with
    /// [`Error::TooFast`].
    pub async fn chat_message(
        &self,
        session: SessionId,
        msg: &str,
    ) -> Result<()> {
        if !self.touch(session) {
            return Err(Error::BadSession);
        }
        let msg = cut(msg, MSG_MAX_CHARS);
        if let Some(command) = command::parse(&msg) {
            return self.run_command(session, command).await;
        }
        if msg.trim().is_empty() {
            return Ok(());
        }
        if !self.within_rate(session) {
            return self.refuse_too_fast(session).await;
        }
        let nick = self.nick(session).ok_or(Error::BadSession)?;
        let to_others = Event::now(EventKind::ChatMsg {
            nick: nick.clone(),
            msg: msg.clone(),
        });
        // The scrollback line is written first, so the flush that makes
        // the message durable covers it too; a failed send takes it back.
        let line = self.history.record(to_others.ts_ms, &nick, &msg)?;
        let to_sender = Event {
            ts_ms: to_others.ts_ms,
            kind: EventKind::SentChatMsg { nick, msg },
        };
        let sent = self
            .office
            .post(vec![
                Letter {
                    to: Recipients::AllExcept(vec![session]),
                    event: to_others,
                },
                Letter {
                    to: Recipients::One(session),
                    event: to_sender,
                },
            ])
            .await;
        match (&sent, line) {
            (Ok(()), Some(id)) => self.history.reveal(id),
            (Err(_), Some(id)) => self.history.forget(id)?,
            (_, None) => {}
        }
        sent
    }

    /// The room's recent chat lines, oldest first, as chat_msg events
    /// with the room's own ids (not the caller's mailbox ids).
    pub fn history(&self, session: SessionId) -> Result<Vec<(u64, Event)>> {
        if !self.touch(session) {
            return Err(Error::BadSession);
        }
        self.history.lines()
    }

    /// The nicks in the room, sorted ignoring case.
    pub fn users(&self, session: SessionId) -> Result<Vec<String>> {
        if !self.touch(session) {
            return Err(Error::BadSession);
        }
        let roster = self.roster();
        let mut nicks: Vec<String> = roster
            .clients
            .values()
            .filter(|c| c.record.ended.is_none())
            .map(|c| c.record.nick.clone())
            .collect();
        nicks.sort_by_key(|n| n.to_ascii_lowercase());
        Ok(nicks)
    }

    /// The id the session's next event will get: where a client starts
    /// waiting.
    pub fn current_id(&self, session: SessionId) -> Result<u64> {
        if !self.touch(session) {
            return Err(Error::BadSession);
        }
        let mailbox = self.office.get(session).ok_or(Error::BadSession)?;
        Ok(mailbox.visible_next())
    }

    /// Waits for events with id >= `msg_id` (see [`WaitAnswer`]).
    ///
    /// For a session the server ended, answers what is pending (the final
    /// notice among it) without parking, then forgets the session.
    pub async fn wait(
        &self,
        session: SessionId,
        msg_id: u64,
    ) -> Result<WaitAnswer> {
        let ended = {
            let roster = self.roster();
            match roster.clients.get(&session) {
                None => return Ok(WaitAnswer::BadSession),
                Some(client) => client.record.ended.is_some(),
            }
        };
        if ended {
            return self.final_read(session, msg_id).await;
        }

        self.touch(session);
        let outcome =
            self.office.wait(session, msg_id, self.comet_timeout).await;
        self.touch(session);
        Ok(match outcome? {
            WaitOutcome::Delivered(delivery) => WaitAnswer::Events(delivery),
            WaitOutcome::TimedOut | WaitOutcome::ShuttingDown => {
                WaitAnswer::Reconnect
            }
            WaitOutcome::Closed => WaitAnswer::BadSession,
            WaitOutcome::Resync => WaitAnswer::Resync,
        })
    }

    /// The last read of an ended session: what is left, then it is gone.
    async fn final_read(
        &self,
        session: SessionId,
        msg_id: u64,
    ) -> Result<WaitAnswer> {
        let delivery = match self.office.get(session) {
            Some(mailbox) if msg_id <= mailbox.visible_next() => {
                self.office.read(&mailbox, msg_id)?
            }
            _ => Delivery::default(),
        };
        self.leave(session, "ended").await?;
        if delivery.events.is_empty() {
            Ok(WaitAnswer::BadSession)
        } else {
            Ok(WaitAnswer::Events(delivery))
        }
    }

    /// Ends a session on the server's behalf: the others see it leave
    /// with `reason`, and its own mailbox gets `notice` as the last event.
    pub async fn end_session(
        &self,
        session: SessionId,
        reason: &str,
        notice: &str,
    ) -> Result<bool> {
        let reason = cut(reason, REASON_MAX_CHARS);
        let Some(record) = self.mark_ended(session, &reason) else {
            return Ok(false);
        };
        let value = encode(&StoredClient::V1(record.clone()))?;
        {
            let _writing = self.store.writing();
            self.store.clients.insert(head_key(session), value)?;
        }
        self.office.retire(session);

        let left = Event::now(EventKind::UserLeftRoom {
            nick: record.nick.clone(),
            reason: reason.clone(),
        });
        let notice = Event::now(EventKind::SystemMsg {
            text: notice.to_string(),
        });
        self.office
            .post(vec![
                Letter {
                    to: Recipients::AllExcept(vec![session]),
                    event: left,
                },
                Letter {
                    to: Recipients::One(session),
                    event: notice,
                },
            ])
            .await?;
        tracing::info!(nick = %record.nick, %reason, "session ended by the server");
        Ok(true)
    }

    /// Marks an active session ended in memory and frees its nick.
    fn mark_ended(
        &self,
        session: SessionId,
        reason: &str,
    ) -> Option<ClientRecord> {
        let mut roster = self.roster();
        let client = roster.clients.get_mut(&session)?;
        if client.record.ended.is_some() {
            return None;
        }
        client.record.ended = Some(Ended {
            reason: reason.to_string(),
            at_ms: unix_ms(),
        });
        let record = client.record.clone();
        roster.by_nick.remove(&record.nick.to_ascii_lowercase());
        Some(record)
    }

    /// Ends every session idle longer than max_idle (a session with a
    /// parked poll is never idle), forgets ended sessions whose notice
    /// nobody read within max_idle, and removes expired bans. Returns how
    /// many sessions it ended.
    pub async fn sweep_idle(&self) -> Result<usize> {
        self.purge_expired_bans()?;
        let (idle, expired) = self.find_idle();
        for session in &expired {
            self.leave(*session, "ended").await?;
        }
        let notice = format!(
            "You were disconnected after {} seconds without activity (timeout).",
            self.max_idle.as_secs()
        );
        let mut ended = 0;
        for session in idle {
            if self.end_session(session, "timeout", &notice).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    fn find_idle(&self) -> (Vec<SessionId>, Vec<SessionId>) {
        let now_ms = unix_ms();
        let max_idle_ms = self.max_idle.as_millis() as u64;
        let roster = self.roster();
        let mut idle = Vec::new();
        let mut expired = Vec::new();
        for (session, client) in &roster.clients {
            match &client.record.ended {
                Some(ended)
                    if now_ms.saturating_sub(ended.at_ms) > max_idle_ms =>
                {
                    expired.push(*session)
                }
                Some(_) => {}
                None => {
                    let parked = self
                        .office
                        .get(*session)
                        .is_some_and(|m| m.parked() > 0);
                    if !parked && client.last_action.elapsed() > self.max_idle {
                        idle.push(*session);
                    }
                }
            }
        }
        (idle, expired)
    }

    /// Answers every parked poll with "reconnect" and refuses new writes;
    /// the store is flushed when the room is dropped.
    pub fn shut_down(&self) {
        self.office.shut_down();
    }
}

/// Rebuilds the roster from the `clients` tree and makes it agree with
/// the mailboxes: a client without a mailbox (a join cut short) and a
/// mailbox without a client (a leave cut short) are both removed.
fn load_roster(store: &Store, office: &PostOffice) -> Result<Roster> {
    let mut roster = Roster::default();
    for item in store.clients.iter() {
        let (key, value) = item?;
        let StoredClient::V1(record) = decode(CLIENTS, &key, &value)?;
        let session = be_u64(&key).ok_or_else(|| Error::Corrupt {
            tree: CLIENTS,
            key: crate::store::hex(&key),
            cause: "key has the wrong length".into(),
        })?;
        let Some(_) = office.get(session) else {
            tracing::warn!(nick = %record.nick, "dropping a session without a mailbox");
            store.clients.remove(&key)?;
            continue;
        };
        if record.ended.is_some() {
            office.retire(session);
        } else {
            roster
                .by_nick
                .insert(record.nick.to_ascii_lowercase(), session);
        }
        roster.by_token.insert(record.token_hash, session);
        roster.clients.insert(session, Client::new(record, true));
    }
    for session in office.sessions() {
        if !roster.clients.contains_key(&session) {
            tracing::warn!(session, "dropping a mailbox without a session");
            office.discard(session)?;
        }
    }
    Ok(roster)
}

/// Trims and cuts a nick and checks it is letters and digits.
pub fn clean_nick(nick: &str) -> Result<String> {
    let nick = cut(nick.trim(), NICK_MAX_CHARS);
    if nick.is_empty() || !nick.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::InvalidNick);
    }
    Ok(nick)
}

/// The first `max` characters of `text` (characters, never bytes).
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// A new random session token: 32 bytes from the OS RNG, as hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    crate::store::hex(&bytes)
}

/// The SHA-256 of a token, which is all the server keeps of it.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
