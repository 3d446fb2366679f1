//! The room's scrollback: its last `history_on_join` chat lines.
//!
//! A mailbox only holds what arrived after its session joined, so a new
//! member (or a reloaded page) would start with an empty window. The room
//! therefore keeps its own short record of chat lines in the `history`
//! tree, with ids of its own that only grow, also across restarts (the
//! next id is stored beside the lines, never derived from a scan). Every
//! write trims the tree back to the limit, so it never grows past it.
//!
//! Joins, leaves and notices are not kept: the online list already says
//! who is here, and a notice is meant for one reader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sled::Batch;

use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::store::{
    be_u64, decode, encode, hex, line_key, Store, StoredHead, StoredLine,
    HISTORY, HISTORY_HEAD,
};

/// The room's recent chat lines, on disk.
pub struct History {
    store: Arc<Store>,
    /// How many lines are kept; 0 keeps none.
    limit: u64,
    /// The id the next line gets. Held while a line is written, so ids
    /// reach the tree in order.
    next: Mutex<u64>,
    /// Lines below this id are on disk and may be shown; a line becomes
    /// visible only once the message it belongs to was made durable, so
    /// no reader sees a line that a crash could take back.
    visible: AtomicU64,
}

impl History {
    /// Reads the stored head; an empty tree starts at id 0.
    pub fn load(store: Arc<Store>, limit: u64) -> Result<History> {
        let next = match store.history.get(HISTORY_HEAD)? {
            Some(bytes) => {
                let StoredHead::V1 { next_id } =
                    decode(HISTORY, HISTORY_HEAD, &bytes)?;
                next_id
            }
            None => 0,
        };
        Ok(History {
            store,
            limit,
            next: Mutex::new(next),
            visible: AtomicU64::new(next),
        })
    }

    fn next(&self) -> MutexGuard<'_, u64> {
        // The counter only moves after a successful write, so a poisoned
        // lock still holds a correct value.
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps one chat line and drops the lines beyond the limit, in one
    /// sled batch. Returns the line's id, or `None` when nothing is kept.
    ///
    /// The write is not durable on return: the caller's next
    /// [`Store::wait_durable`] covers it.
    pub fn record(
        &self,
        ts_ms: u64,
        nick: &str,
        msg: &str,
    ) -> Result<Option<u64>> {
        if self.limit == 0 {
            return Ok(None);
        }
        let line = encode(&StoredLine::V1 {
            ts_ms,
            nick: nick.to_string(),
            msg: msg.to_string(),
        })?;
        let mut next = self.next();
        let id = *next;
        let head = encode(&StoredHead::V1 { next_id: id + 1 })?;
        let mut batch = Batch::default();
        batch.insert(&line_key(id), line);
        batch.insert(HISTORY_HEAD, head);

        let keep_from = (id + 1).saturating_sub(self.limit);
        let tree = &self.store.history;
        {
            let _writing = self.store.writing();
            for key in tree.range(line_key(0)..line_key(keep_from)).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        *next = id + 1;
        Ok(Some(id))
    }

    /// Shows the line `id` (and every line before it) to readers; call it
    /// once the write that recorded it is durable.
    pub fn reveal(&self, id: u64) {
        self.visible.fetch_max(id + 1, Ordering::AcqRel);
    }

    /// Takes back a line whose message could not be sent. Its id is not
    /// handed out again.
    pub fn forget(&self, id: u64) -> Result<()> {
        let _writing = self.store.writing();
        self.store.history.remove(line_key(id))?;
        Ok(())
    }

    /// The kept lines as chat_msg events with their ids, oldest first; at
    /// most `limit` of them, even if a larger limit once kept more.
    pub fn lines(&self) -> Result<Vec<(u64, Event)>> {
        let mut lines = Vec::new();
        let visible = line_key(self.visible.load(Ordering::Acquire));
        let newest_first = self.store.history.range(line_key(0)..visible).rev();
        for item in newest_first.take(self.limit as usize) {
            let (key, value) = item?;
            let id =
                be_u64(&key).ok_or_else(|| crate::error::Error::Corrupt {
                    tree: HISTORY,
                    key: hex(&key),
                    cause: "key has the wrong length".into(),
                })?;
            let StoredLine::V1 { ts_ms, nick, msg } =
                decode(HISTORY, &key, &value)?;
            let kind = EventKind::ChatMsg { nick, msg };
            lines.push((id, Event { ts_ms, kind }));
        }
        lines.reverse();
        Ok(lines)
    }
}
