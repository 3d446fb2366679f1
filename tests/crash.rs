//! Crash safety of the real binary: a steady load of senders and parked
//! listeners, SIGKILL at a random moment, a restart on the same directory,
//! and a check of every mailbox from the clients' side.
//!
//! CI runs 10 rounds. For a longer run set `NATTER_CRASH_ROUNDS` (for
//! example `NATTER_CRASH_ROUNDS=200 cargo test --test crash`); set
//! `NATTER_CRASH_SEED` to replay the kill moments of an earlier run (each
//! run prints its seed).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{self, Server, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const SENDERS: usize = 3;
const LISTENERS: usize = 3;

/// Mailboxes large enough that nothing is dropped for capacity, so every
/// event can be checked; a short poll timeout keeps the listeners cycling.
const ENV: &[(&str, &str)] = &[
    ("ROCKET_MAILBOX_CAPACITY", "10000000"),
    ("ROCKET_COMET_TIMEOUT", "2"),
    process::UNLIMITED[0],
    process::UNLIMITED[1],
];

/// What the clients know, kept across rounds.
#[derive(Default)]
struct Ledger {
    /// Every message text a sender tried to send.
    tried: HashSet<String>,
    /// The texts whose send was answered "ok".
    acked: HashSet<String>,
    /// Per listener: every event it was given, by id.
    seen: Vec<BTreeMap<u64, Value>>,
    /// Per listener: the id to wait from next.
    next: Vec<u64>,
    /// Anything that went wrong while the server was meant to be up.
    failures: Vec<String>,
}

/// Acknowledged messages survive SIGKILL at any moment, once each and with
/// their ids, in every mailbox; what a listener saw is never taken back;
/// ids only grow; the server starts every time.
#[test]
fn acknowledged_messages_survive_sigkill_at_random_moments() {
    let rounds: usize = std::env::var("NATTER_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("NATTER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {rounds} rounds, NATTER_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, ENV);
    let senders: Vec<Session> = (0..SENDERS)
        .map(|i| Session::login(&server, &format!("Sender{i}")))
        .collect();
    let listeners: Vec<Session> = (0..LISTENERS)
        .map(|i| Session::login(&server, &format!("Listener{i}")))
        .collect();
    let ledger = Arc::new(Mutex::new(Ledger {
        next: listeners.iter().map(Session::start).collect(),
        seen: vec![BTreeMap::new(); LISTENERS],
        ..Ledger::default()
    }));

    let mut server = server;
    for round in 0..rounds {
        let pause = Duration::from_millis(rng.gen_range(100..800));
        run_load(server, &senders, &listeners, &ledger, round, pause);

        server = process::start(&dir, ENV);
        let senders: Vec<Session> =
            senders.iter().map(|s| s.on(&server)).collect();
        let listeners: Vec<Session> =
            listeners.iter().map(|s| s.on(&server)).collect();
        check_after_restart(&senders, &listeners, &ledger.lock().unwrap());
    }
    let ledger = ledger.lock().unwrap();
    println!(
        "crash test: {} sends acknowledged, {} tried, over {rounds} kills",
        ledger.acked.len(),
        ledger.tried.len()
    );
    assert!(
        ledger.acked.len() >= rounds,
        "the load barely ran: {} acknowledged sends",
        ledger.acked.len()
    );
}

/// Runs senders and listeners against `server`, kills it with SIGKILL
/// after `pause`, and waits for the client threads to notice.
fn run_load(
    server: Server,
    senders: &[Session],
    listeners: &[Session],
    ledger: &Arc<Mutex<Ledger>>,
    round: usize,
    pause: Duration,
) {
    let killing = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.on(&server);
        let (ledger, killing) = (ledger.clone(), killing.clone());
        threads.push(std::thread::spawn(move || {
            send_until_cut(&sender, &format!("r{round}s{i}"), &ledger, &killing)
        }));
    }
    for (i, listener) in listeners.iter().enumerate() {
        let listener = listener.on(&server);
        let (ledger, killing) = (ledger.clone(), killing.clone());
        threads.push(std::thread::spawn(move || {
            listen_until_cut(&listener, i, &ledger, &killing)
        }));
    }

    std::thread::sleep(pause);
    killing.store(true, Ordering::SeqCst);
    // SIGKILL, then reap, so the lock is gone before the restart.
    server.kill();
    for thread in threads {
        thread.join().expect("a client thread panicked");
    }
    let failures = &ledger.lock().unwrap().failures;
    assert!(failures.is_empty(), "round {round}: {failures:#?}");
}

/// Sends numbered messages until the connection is cut.
fn send_until_cut(
    sender: &Session,
    prefix: &str,
    ledger: &Mutex<Ledger>,
    killing: &AtomicBool,
) {
    for n in 0.. {
        let text = format!("{prefix}m{n}");
        ledger.lock().unwrap().tried.insert(text.clone());
        let reply = sender.try_post("/chat/send_msg/", &[("msg", &text)]);
        let mut ledger = ledger.lock().unwrap();
        match reply {
            Ok(reply) if reply["status"] == "ok" => {
                ledger.acked.insert(text);
            }
            other => {
                if !killing.load(Ordering::SeqCst) {
                    ledger.failures.push(format!("send {text}: {other:?}"));
                }
                return;
            }
        }
    }
}

/// Long-polls until the connection is cut, noting every event and
/// checking that ids only grow.
fn listen_until_cut(
    listener: &Session,
    index: usize,
    ledger: &Mutex<Ledger>,
    killing: &AtomicBool,
) {
    loop {
        let from = ledger.lock().unwrap().next[index];
        let reply = listener.try_get(&format!("/chat/wait/?msg_id={from}"));
        let mut ledger = ledger.lock().unwrap();
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                if !killing.load(Ordering::SeqCst) {
                    ledger.failures.push(format!("wait {index}: {e}"));
                }
                return;
            }
        };
        if reply["response"] == "reconnect" {
            continue;
        }
        let Some(events) = reply["response"].as_array() else {
            ledger.failures.push(format!("wait {index}: {reply}"));
            return;
        };
        if reply.get("gap").is_some() {
            ledger
                .failures
                .push(format!("wait {index}: a gap: {reply}"));
        }
        for event in events {
            let id = event["id"].as_u64().unwrap_or(0);
            let asked = ledger.next[index];
            if id < asked {
                ledger.failures.push(format!(
                    "listener {index} got id {id} after asking from {asked}"
                ));
            }
            ledger.next[index] = id + 1;
            ledger.seen[index].insert(id, event.clone());
        }
    }
}

/// Reads every mailbox of the restarted server and checks it against
/// what the clients knew before the kill.
fn check_after_restart(
    senders: &[Session],
    listeners: &[Session],
    ledger: &Ledger,
) {
    let mut nicks: Vec<String> = (0..LISTENERS)
        .map(|i| format!("Listener{i}"))
        .chain((0..SENDERS).map(|i| format!("Sender{i}")))
        .collect();
    nicks.sort();
    let online = listeners[0].get("/chat/online/").unwrap()["response"].clone();
    assert_eq!(online, serde_json::json!(nicks), "every session survives");

    // How often each message text is in each mailbox.
    let mut counts: Vec<HashMap<String, usize>> = Vec::new();
    for (index, listener) in listeners.iter().enumerate() {
        let events = listener.read_all();
        check_listener(index, &events, ledger);
        counts.push(chat_counts(&events, "chat_msg"));
    }
    for (index, sender) in senders.iter().enumerate() {
        let events = sender.read_all();
        let mut mine = chat_counts(&events, "sent_chat_msg");
        for (text, n) in chat_counts(&events, "chat_msg") {
            assert!(
                !text.contains(&format!("s{index}m")),
                "sender {index} got its own {text} as chat_msg"
            );
            mine.insert(text, n);
        }
        counts.push(mine);
    }

    // Acknowledged: once in every mailbox. Not acknowledged: in all or
    // none (one batch), never twice.
    for text in &ledger.tried {
        let found: Vec<usize> = counts
            .iter()
            .map(|c| c.get(text).copied().unwrap_or(0))
            .collect();
        if ledger.acked.contains(text) {
            assert!(found.iter().all(|&n| n == 1), "{text}: {found:?}");
        } else {
            assert!(
                found.iter().all(|&n| n == 0) || found.iter().all(|&n| n == 1),
                "{text} (not acknowledged): {found:?}"
            );
        }
    }
    for mailbox in &counts {
        for text in mailbox.keys() {
            assert!(ledger.tried.contains(text), "{text} was never sent");
        }
    }
}

/// Everything a listener was shown is still there, unchanged, and ids
/// only grow.
fn check_listener(index: usize, events: &[Value], ledger: &Ledger) {
    let mut by_id = BTreeMap::new();
    let mut last = None;
    for event in events {
        let id = event["id"].as_u64().expect("an id");
        assert!(last < Some(id), "listener {index}: ids out of order");
        last = Some(id);
        by_id.insert(id, event.clone());
    }
    for (id, event) in &ledger.seen[index] {
        assert_eq!(
            by_id.get(id),
            Some(event),
            "listener {index} saw event {id} before the kill"
        );
    }
    let start = listeners_start(events);
    assert!(
        start >= ledger.next[index],
        "listener {index}: next id went back from {} to {start}",
        ledger.next[index]
    );
}

/// The id after the last event read.
fn listeners_start(events: &[Value]) -> u64 {
    events
        .last()
        .and_then(|e| e["id"].as_u64())
        .map_or(0, |id| id + 1)
}

/// How often each chat text of kind `t` occurs.
fn chat_counts(events: &[Value], t: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events.iter().filter(|e| e["t"] == t) {
        let text = event["d"]["msg"].as_str().unwrap_or("").to_string();
        *counts.entry(text).or_insert(0) += 1;
    }
    counts
}
