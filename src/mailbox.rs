//! Per-session mailboxes and the post office that fills them.
//!
//! A mailbox is an id-ordered run of events in the `mailboxes` tree plus a
//! little state in memory: the next id to hand out, how far readers may
//! read, and the [`Notify`] that parked long polls wait on.
//!
//! Two rules keep delivery exact:
//!
//! - Ids are handed out and their batch applied under one lock, so a
//!   reader never sees id N+1 before id N exists.
//! - Readers only see ids below `visible_next`, which moves forward (and
//!   wakes the parked polls) only once the flusher has put the events on
//!   disk. A crash can therefore never take back an event a client saw.
//!
//! Each mailbox also keeps its newest few events in memory (shared with
//! every other mailbox a broadcast reached, JSON rendered once), so a
//! woken poll answers from there instead of scanning and decoding sled.
//! That copy is filled under the same lock that applies the batch and read
//! under the same `visible_next` bound, so it never shows more than sled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sled::IVec;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::event::{Event, Rendered};
use crate::store::{
    be_u64, decode, encode, event_key, head_key, SessionId, Store, StoredEvent,
    StoredHead, MAILBOXES,
};

/// How many of its newest events a mailbox also keeps in memory.
const RECENT: usize = 16;

/// Events kept in memory, oldest first, with consecutive ids.
type Recent = VecDeque<(u64, Arc<Rendered>)>;

/// One session's mailbox as kept in memory.
#[derive(Debug)]
pub struct Mailbox {
    session: SessionId,
    notify: Notify,
    /// The next id to hand out; only changed under the post office lock.
    next_id: AtomicU64,
    /// Ids below this one are on disk and may be read.
    visible_next: AtomicU64,
    /// The oldest id still kept; older ones were dropped for capacity.
    oldest: AtomicU64,
    /// Whether room broadcasts reach it (false once the session ended).
    in_room: AtomicBool,
    /// Set when the mailbox is deleted; parked polls then give up.
    closed: AtomicBool,
    /// Long polls parked on it right now.
    parked: AtomicUsize,
    /// The newest events (at most [`RECENT`]), pushed under the post
    /// office lock right after their batch was applied.
    recent: Mutex<Recent>,
}

impl Mailbox {
    fn new(session: SessionId, next_id: u64, oldest: u64) -> Mailbox {
        Mailbox {
            session,
            notify: Notify::new(),
            next_id: AtomicU64::new(next_id),
            visible_next: AtomicU64::new(next_id),
            oldest: AtomicU64::new(oldest),
            in_room: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // Each change is one push or pop, so a poisoned lock is intact.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events with ids in `start..upto` from memory, or None when the
    /// memory copy does not reach back to `start`.
    fn recent_range(
        &self,
        start: u64,
        upto: u64,
    ) -> Option<Vec<(u64, Arc<Rendered>)>> {
        let recent = self.recent();
        let (first, _) = recent.front()?;
        if *first > start {
            return None;
        }
        let skip = (start - first) as usize;
        let events = recent
            .iter()
            .skip(skip)
            .take_while(|(id, _)| *id < upto)
            .cloned()
            .collect();
        Some(events)
    }

    /// The id the next readable event will get: what `/chat/start/`
    /// answers.
    pub fn visible_next(&self) -> u64 {
        self.visible_next.load(Ordering::Acquire)
    }

    /// How many long polls are parked on this mailbox.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

/// Mailboxes a post wrote to, each with its new next id.
type Touched = Vec<(Arc<Mailbox>, u64)>;

/// One mailbox's part of a post: the mailbox, its next id and oldest
/// kept id as they will be, and the events it gets.
type Plan = Vec<(Arc<Mailbox>, u64, u64, Vec<(u64, Arc<Rendered>)>)>;

/// Who a letter goes to.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// One mailbox.
    One(SessionId),
    /// Every mailbox still in the room except these.
    AllExcept(Vec<SessionId>),
}

/// One event and who receives it.
#[derive(Debug, Clone)]
pub struct Letter {
    pub to: Recipients,
    pub event: Event,
}

/// Events read from a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// `(id, event)`, oldest first. An event reads as its [`Event`].
    pub events: Vec<(u64, Arc<Rendered>)>,
    /// Set when the reader asked for ids that were dropped for capacity:
    /// the first and last id it missed.
    pub gap: Option<(u64, u64)>,
}

/// How a wait on a mailbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Events with id >= the asked id.
    Delivered(Delivery),
    /// Nothing arrived before the timeout.
    TimedOut,
    /// The mailbox was deleted (or never existed).
    Closed,
    /// The server is shutting down.
    ShuttingDown,
    /// The asked id is beyond anything this mailbox ever held.
    Resync,
}

/// Creates, fills, reads and deletes mailboxes.
pub struct PostOffice {
    store: Arc<Store>,
    capacity: u64,
    boxes: Mutex<HashMap<SessionId, Arc<Mailbox>>>,
    closing: AtomicBool,
}

impl PostOffice {
    /// Loads every mailbox from the store, reading each stored record once
    /// so that one that cannot be decoded stops the start-up (with its
    /// tree and key) instead of failing a poll later.
    pub fn load(store: Arc<Store>, capacity: u64) -> Result<PostOffice> {
        let tree = &store.mailboxes;
        let mut boxes = HashMap::new();
        let mut headless = Vec::new();
        // The mailbox whose events come next: (session, next id, oldest).
        let mut open: Option<(SessionId, u64, Option<u64>)> = None;
        for item in tree.iter() {
            let (key, value) = item?;
            let session = be_u64(&key).ok_or_else(|| corrupt(&key))?;
            match key.len() {
                8 => {
                    let StoredHead::V1 { next_id } =
                        decode(MAILBOXES, &key, &value)?;
                    if let Some(done) = open.replace((session, next_id, None)) {
                        boxes.insert(done.0, loaded(done));
                    }
                }
                16 => {
                    let _: StoredEvent = decode(MAILBOXES, &key, &value)?;
                    let id = be_u64(&key[8..]).ok_or_else(|| corrupt(&key))?;
                    match &mut open {
                        Some((s, _, oldest)) if *s == session => {
                            oldest.get_or_insert(id);
                        }
                        _ if headless.last() != Some(&session) => {
                            headless.push(session)
                        }
                        _ => {}
                    }
                }
                _ => return Err(corrupt(&key)),
            }
        }
        if let Some(done) = open {
            boxes.insert(done.0, loaded(done));
        }

        // Events without a head: left by an interrupted delete.
        for session in headless {
            tracing::warn!(session, "removing events of a headless mailbox");
            remove_events(tree, session)?;
        }
        Ok(PostOffice {
            store,
            capacity: capacity.max(1),
            boxes: Mutex::new(boxes),
            closing: AtomicBool::new(false),
        })
    }

    fn boxes(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Mailbox>>> {
        // A panic while holding this lock cannot leave the map half
        // changed (each change is one insert or remove), so a poisoned
        // lock is still safe to use.
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every session that has a mailbox.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.boxes().keys().copied().collect()
    }

    /// The mailbox of a session, if it has one.
    pub fn get(&self, session: SessionId) -> Option<Arc<Mailbox>> {
        self.boxes().get(&session).cloned()
    }

    /// Creates an empty mailbox and waits until it is on disk.
    ///
    /// Fails with [`Error::MailboxExists`] if the session has one.
    pub async fn create(&self, session: SessionId) -> Result<Arc<Mailbox>> {
        let (mailbox, ticket) = {
            let mut boxes = self.boxes();
            if boxes.contains_key(&session) {
                return Err(Error::MailboxExists(session));
            }
            let head = encode(&StoredHead::V1 { next_id: 0 })?;
            let _writing = self.store.writing();
            self.store.mailboxes.insert(head_key(session), head)?;
            let mailbox = Arc::new(Mailbox::new(session, 0, 0));
            boxes.insert(session, mailbox.clone());
            (mailbox, self.store.note_write())
        };
        self.store.wait_durable(ticket).await?;
        Ok(mailbox)
    }

    /// Deletes a mailbox and its events and waits until that is on disk;
    /// deleting a missing one is fine.
    ///
    /// Polls parked on it wake up and see it closed.
    pub async fn delete(&self, session: SessionId) -> Result<()> {
        self.discard(session)?;
        self.store.commit().await
    }

    /// Deletes a mailbox like [`PostOffice::delete`] without waiting for
    /// the disk, for start-up repairs.
    pub fn discard(&self, session: SessionId) -> Result<()> {
        let mailbox = self.boxes().remove(&session);
        if let Some(mailbox) = &mailbox {
            mailbox.closed.store(true, Ordering::Release);
            mailbox.notify.notify_waiters();
        }

        // No post can reach this session any more, so the range is stable.
        let tree = &self.store.mailboxes;
        let _writing = self.store.writing();
        tree.remove(head_key(session))?;
        remove_events(tree, session)
    }

    /// Stops room broadcasts from reaching this mailbox; letters sent to
    /// it alone still arrive.
    pub fn retire(&self, session: SessionId) {
        if let Some(mailbox) = self.get(session) {
            mailbox.in_room.store(false, Ordering::Release);
        }
    }

    /// Sends one event to one mailbox.
    pub async fn send(&self, session: SessionId, event: Event) -> Result<()> {
        self.post(vec![Letter {
            to: Recipients::One(session),
            event,
        }])
        .await
    }

    /// Sends one event to every mailbox in the room but the listed ones.
    pub async fn broadcast(
        &self,
        event: Event,
        except: &[SessionId],
    ) -> Result<()> {
        self.post(vec![Letter {
            to: Recipients::AllExcept(except.to_vec()),
            event,
        }])
        .await
    }

    /// Delivers letters in one sled batch and returns once they are on
    /// disk and the parked polls of their recipients were woken.
    ///
    /// A letter to a mailbox that does not exist is dropped.
    pub async fn post(&self, letters: Vec<Letter>) -> Result<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let mut encoded = Vec::with_capacity(letters.len());
        for letter in &letters {
            let stored = StoredEvent::V1(letter.event.clone());
            let rendered = Arc::new(Rendered::new(letter.event.clone()));
            encoded.push((IVec::from(encode(&stored)?), rendered));
        }

        let Some((ticket, touched)) = self.apply_letters(&letters, &encoded)?
        else {
            return Ok(());
        };
        self.store.wait_durable(ticket).await?;

        for (mailbox, next_id) in touched {
            mailbox.visible_next.fetch_max(next_id, Ordering::AcqRel);
            mailbox.notify.notify_waiters();
        }
        Ok(())
    }

    /// Hands out ids and applies the batch, all under the lock. Returns
    /// the flush ticket and each touched mailbox with its new next id.
    fn apply_letters(
        &self,
        letters: &[Letter],
        encoded: &[(IVec, Arc<Rendered>)],
    ) -> Result<Option<(u64, Touched)>> {
        let boxes = self.boxes();
        let mut plan: Plan = Vec::new();
        let mut slot: HashMap<SessionId, usize> = HashMap::new();
        let mut batch = sled::Batch::default();

        for (letter, (bytes, rendered)) in letters.iter().zip(encoded) {
            for mailbox in recipients(&boxes, &letter.to) {
                let index = *slot.entry(mailbox.session).or_insert_with(|| {
                    let next = mailbox.next_id.load(Ordering::Acquire);
                    let oldest = mailbox.oldest.load(Ordering::Acquire);
                    plan.push((mailbox.clone(), next, oldest, Vec::new()));
                    plan.len() - 1
                });
                let (_, next, oldest, added) = &mut plan[index];
                batch.insert(&event_key(mailbox.session, *next), bytes.clone());
                added.push((*next, rendered.clone()));
                *next += 1;
                while *next - *oldest > self.capacity {
                    batch.remove(&event_key(mailbox.session, *oldest));
                    *oldest += 1;
                }
            }
        }
        if plan.is_empty() {
            return Ok(None);
        }

        for (mailbox, next, _, _) in &plan {
            let head = encode(&StoredHead::V1 { next_id: *next })?;
            batch.insert(&head_key(mailbox.session), head);
        }
        {
            let _writing = self.store.writing();
            self.store.mailboxes.apply_batch(batch)?;
        }

        // Only now, with the batch applied, do the new ids count.
        for (mailbox, next, oldest, added) in &plan {
            mailbox.next_id.store(*next, Ordering::Release);
            mailbox.oldest.store(*oldest, Ordering::Release);
            let mut recent = mailbox.recent();
            recent.extend(added.iter().cloned());
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
        let ticket = self.store.note_write();
        let touched =
            plan.into_iter().map(|(m, next, _, _)| (m, next)).collect();
        Ok(Some((ticket, touched)))
    }

    /// Reads the visible events with id >= `from`, oldest first.
    pub fn read(&self, mailbox: &Mailbox, from: u64) -> Result<Delivery> {
        let upto = mailbox.visible_next();
        let oldest = mailbox.oldest.load(Ordering::Acquire);
        let start = from.max(oldest);
        let gap = (from < oldest).then(|| (from, oldest - 1));
        if start >= upto {
            return Ok(Delivery {
                events: vec![],
                gap,
            });
        }
        if let Some(events) = mailbox.recent_range(start, upto) {
            return Ok(Delivery { events, gap });
        }
        let mut events = Vec::new();
        let range =
            event_key(mailbox.session, start)..event_key(mailbox.session, upto);
        for item in self.store.mailboxes.range(range) {
            let (key, value) = item?;
            let id = be_u64(&key[8..]).ok_or_else(|| corrupt(&key))?;
            let StoredEvent::V1(event) = decode(MAILBOXES, &key, &value)?;
            events.push((id, Arc::new(Rendered::new(event))));
        }
        Ok(Delivery { events, gap })
    }

    /// Waits until the mailbox holds an event with id >= `from`, then
    /// returns every such event. Gives up after `timeout`, when the
    /// mailbox is deleted, or when the server shuts down.
    pub async fn wait(
        &self,
        session: SessionId,
        from: u64,
        timeout: Duration,
    ) -> Result<WaitOutcome> {
        let Some(mailbox) = self.get(session) else {
            return Ok(WaitOutcome::Closed);
        };
        let _parked = ParkedGuard::new(&mailbox);
        let deadline = tokio::time::Instant::now() + timeout;

        loop {
            // Arm the wake-up before looking, so a post that lands between
            // the look and the park still wakes us.
            let notified = mailbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            if mailbox.closed.load(Ordering::Acquire) {
                return Ok(WaitOutcome::Closed);
            }
            if self.closing.load(Ordering::Acquire) {
                return Ok(WaitOutcome::ShuttingDown);
            }
            if from > mailbox.visible_next() {
                return Ok(WaitOutcome::Resync);
            }
            let delivery = self.read(&mailbox, from)?;
            if !delivery.events.is_empty() {
                return Ok(WaitOutcome::Delivered(delivery));
            }

            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(WaitOutcome::TimedOut);
                }
            }
        }
    }

    /// Refuses further posts and wakes every parked poll so it can answer
    /// at once.
    pub fn shut_down(&self) {
        self.closing.store(true, Ordering::Release);
        for mailbox in self.boxes().values() {
            mailbox.notify.notify_waiters();
        }
    }
}

/// The mailboxes a letter reaches.
fn recipients<'a>(
    boxes: &'a HashMap<SessionId, Arc<Mailbox>>,
    to: &'a Recipients,
) -> Box<dyn Iterator<Item = &'a Arc<Mailbox>> + 'a> {
    match to {
        Recipients::One(session) => Box::new(boxes.get(session).into_iter()),
        Recipients::AllExcept(except) => Box::new(boxes.values().filter(|m| {
            m.in_room.load(Ordering::Acquire) && !except.contains(&m.session)
        })),
    }
}

/// A mailbox as loaded: its session, next id and oldest event id (none
/// when it is empty).
fn loaded(
    (session, next_id, oldest): (SessionId, u64, Option<u64>),
) -> Arc<Mailbox> {
    Arc::new(Mailbox::new(session, next_id, oldest.unwrap_or(next_id)))
}

/// Removes every event of a session (not its head).
fn remove_events(tree: &sled::Tree, session: SessionId) -> Result<()> {
    let range = event_key(session, 0)..=event_key(session, u64::MAX);
    let mut batch = sled::Batch::default();
    for key in tree.range(range).keys() {
        batch.remove(key?);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

fn corrupt(key: &[u8]) -> Error {
    Error::Corrupt {
        tree: MAILBOXES,
        key: crate::store::hex(key),
        cause: "key has the wrong length".into(),
    }
}

/// Counts a parked poll for as long as it lives.
struct ParkedGuard<'a>(&'a Mailbox);

impl<'a> ParkedGuard<'a> {
    fn new(mailbox: &'a Mailbox) -> Self {
        mailbox.parked.fetch_add(1, Ordering::Relaxed);
        ParkedGuard(mailbox)
    }
}

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}
