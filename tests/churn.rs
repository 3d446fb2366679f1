//! Bounded growth under churn, with the real binary: 2000 sessions a round
//! join, chat and leave (one in ten is left to the idle sweep instead),
//! five rounds (`NATTER_CHURN_ROUNDS` asks for more). Disk use and memory
//! must stop growing after the first round, and nothing may be left on
//! record once everyone is gone. Each round prints the directory's files,
//! the bytes the server wrote and its resident memory (run with
//! `--nocapture`).
//!
//! What bounds the disk: sled keeps everything in one log-structured
//! file, cut in 512 KiB segments, and gives space back only by reusing a
//! segment or cutting free ones off the end. A segment that still holds a
//! few live pages is reused only after sled's background thread has moved
//! them, and that thread moves the pages of at most one segment per
//! wake-up. At sled's default of one wake-up per 500 ms the file wandered
//! between 9 and 30 MB from round to round (the server writes about 200
//! MiB a round) with about 7 KiB live; with the wake-up every 20 ms that
//! `store.rs` sets, 25 rounds over four runs stayed between 2.5 and 5 MB,
//! on a quiet machine and with both cores busy with other work alike. The
//! file grows and shrinks a segment at a time, so the bound allows two
//! segments on top of half again the first round's size.
//!
//! A run takes about a minute and a half on two quiet cores.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{self, Server, Session};

/// Rounds unless `NATTER_CHURN_ROUNDS` asks for more.
const ROUNDS: usize = 5;
const SESSIONS_PER_ROUND: usize = 2000;
const THREADS: usize = 20;

/// Sweep quickly so that abandoned sessions go within the round.
const ENV: &[(&str, &str)] = &[
    ("ROCKET_MAX_IDLE", "1"),
    ("ROCKET_CHECK_IDLE_INTERVAL", "1"),
    ("ROCKET_COMET_TIMEOUT", "1"),
    process::UNLIMITED[0],
    process::UNLIMITED[1],
];

/// After five rounds of 2000 sessions joining, chatting and leaving (or
/// being swept), neither the data directory (give or take two of sled's
/// segments) nor the server's memory is more than half again as large as
/// after the first round.
#[test]
fn churn_of_two_thousand_sessions_a_round_stops_growing_disk_and_memory() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, ENV);
    let rounds = rounds();
    let mut sizes = Vec::new();
    let mut memory = Vec::new();
    let mut written = 0;
    for round in 0..rounds {
        let started = Instant::now();
        churn_one_round(&server, round);
        wait_until_everyone_is_gone(&server, round);
        let size = disk_use(&dir);
        let rss = resident_kib(server.pid());
        let wrote = written_bytes(server.pid()) - written;
        written += wrote;
        println!(
            "churn round {}: {} sessions in {:.1?}, data dir {} KiB \
             ({}), server wrote {} MiB, server RSS {} KiB",
            round + 1,
            SESSIONS_PER_ROUND,
            started.elapsed(),
            size / 1024,
            breakdown(&dir),
            wrote >> 20,
            rss
        );
        sizes.push(size);
        memory.push(rss);
    }
    server.terminate();

    // Nobody is left, so no record may be left either.
    let db = sled::open(&dir).unwrap();
    live_pages(&db);
    for tree in [natter::store::MAILBOXES, natter::store::CLIENTS] {
        let left = db.open_tree(tree).unwrap().len();
        assert_eq!(left, 0, "records left in `{tree}`");
    }

    let (first, last) = (sizes[0], sizes[rounds - 1]);
    assert!(
        last * 2 <= first * 3 + 2 * SEGMENT_ALLOWANCE,
        "the data directory kept growing: {sizes:?} bytes per round"
    );
    let (first, last) = (memory[0], memory[rounds - 1]);
    assert!(
        last * 2 <= first * 3,
        "the server's memory kept growing: {memory:?} KiB per round"
    );
}

/// Two of sled's 512 KiB segments: the steps in which its file grows and
/// shrinks.
const SEGMENT_ALLOWANCE: u64 = 2 * 512 * 1024;

/// 2000 sessions over `THREADS` threads: each logs in, says something,
/// reads its mailbox once and leaves; every tenth one just goes quiet.
fn churn_one_round(server: &Server, round: usize) {
    let per_thread = SESSIONS_PER_ROUND / THREADS;
    let base = server.url("");
    let base = base.as_str();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for n in 0..per_thread {
                    let nick = format!("r{round}t{t}n{n}");
                    let session = Session::login_at(base, &nick);
                    session.say("a line of chat that takes some room on disk");
                    // At least its own line is there, so this never parks.
                    let reply = session.wait(0);
                    assert_eq!(reply["status"], "ok", "{reply}");
                    if n % 10 != 0 {
                        let left = session.post("/chat/leave/", &[]).unwrap();
                        assert_eq!(left["status"], "ok", "{left}");
                    }
                }
            });
        }
    });
}

/// Waits (at most a minute) until the sweep has ended every abandoned
/// session, as an observer that joins and leaves sees it.
fn wait_until_everyone_is_gone(server: &Server, round: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 0.. {
        let observer = Session::login(server, &format!("Observer{round}x{n}"));
        let online = observer.get("/chat/online/").unwrap();
        observer.post("/chat/leave/", &[]).unwrap();
        if online["response"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "sessions linger: {online}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Ended sessions keep a marker for max_idle; let the sweep clear it.
    std::thread::sleep(Duration::from_millis(2500));
}

/// `NATTER_CHURN_ROUNDS`, or `ROUNDS`.
fn rounds() -> usize {
    std::env::var("NATTER_CHURN_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n >= 2)
        .unwrap_or(ROUNDS)
}

/// Each file directly in `dir` with its size in KiB, and the blob count.
fn breakdown(dir: &Path) -> String {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let files = std::fs::read_dir(entry.path()).unwrap().count();
            let kib = disk_use(&entry.path()) / 1024;
            parts.push(format!("{name}/ {files} files {kib} KiB"));
        } else {
            parts.push(format!("{name} {} KiB", meta.len() / 1024));
        }
    }
    parts.sort();
    parts.join(", ")
}

/// Bytes of every file under `dir`.
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_use(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Prints how much of sled's file holds live pages. sled's
/// `space_amplification` divides the file's size by the pages' size plus
/// one segment (512 KiB).
fn live_pages(db: &sled::Db) {
    let on_disk = db.size_on_disk().unwrap() as f64;
    let amplification = db.space_amplification().unwrap();
    let live = on_disk / amplification - 512.0 * 1024.0;
    println!(
        "after the churn: sled file {:.0} KiB, live pages {:.0} KiB",
        on_disk / 1024.0,
        live / 1024.0
    );
}

/// Bytes the process has written so far (to files and pipes), from /proc.
fn written_bytes(pid: u32) -> u64 {
    let io =
        std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The server's resident memory in KiB, from /proc.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}
