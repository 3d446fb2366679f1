//! Bounded growth under churn, with the real binary: 2000 sessions a round
//! join, chat and leave (one in ten is left to the idle sweep instead),
//! five rounds (`NATTER_CHURN_ROUNDS` asks for more). The data directory
//! must stop growing after the first round. Each round prints the
//! directory's files, the bytes the server wrote and its resident memory
//! (run with `--nocapture`); memory is a figure, not asserted.
//!
//! The test is ignored in the default run: it takes two to three minutes
//! on two busy cores, and it does not hold. What was measured here:
//!
//! - Only sled's `db` file grows; there are no blobs and no snapshot
//!   files (sled 0.34.7 writes none: `snapshot_after_ops` does nothing,
//!   and neither does `Mode`, which is stored but never read).
//! - Nothing is leaked, not even sled's own pages: after five rounds sled
//!   counts about 7 KiB of live pages in a 24 MB file (its
//!   `space_amplification` was 47).
//! - The file does not grow by accumulation; it wanders in a band. A
//!   15-round run gave 16, 22, 20, 26.5, 25, 15.5, 21.5, 9, 19.5, 21.5,
//!   24, 21.5, 28, 19.5 and 20 MB (round 15 at 1.25x round 1, a pass by
//!   luck); a 12-round run 11, 15.5, 14.5, 21, 25.5, 22.5, 29.5, 27, 25,
//!   26.5, 28 and 30 MB; 5-round runs 10, 18.5, 11, 17, 19 and 16, 16.5,
//!   23.5, 27.5, 24 MB. Round 1 alone came out anywhere from 9 to 21 MB,
//!   so no ratio to it is a sound bound. The size did not change in 10
//!   idle seconds after a round, nor when the directory was reopened.
//! - Why (from sled's `pagecache/segment.rs`): sled shortens the file
//!   only when its last segments are free, and a segment becomes free
//!   only after its pages were copied elsewhere and the segment they went
//!   to was filled and written out. While the server is busy it writes
//!   180 to 220 MiB a round (logs included) and, as far as the figures
//!   tell, the cleaner falls behind, so the file's end moves out; once it
//!   is quiet, nothing fills the current segment, so the freed ones are
//!   not given back. How far the end moves depends on the load on the
//!   machine, not on the round. A plain sled program (not kept) with the
//!   same keys and batches, writing about 40 MB a round, stayed at 2.5 to
//!   4.5 MB for 12 rounds; what makes the server write five times as much
//!   is not known yet.
//! - 64 KiB segments instead of 512 KiB did not help: 16 to 19 MB in one
//!   run, 9, 11.5, 21, 22, 26 MB in the next.
//!
//! Run it with `cargo test --test churn -- --ignored --nocapture`.

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
/// being swept), the data directory is at most half again as large as
/// after the first round.
#[test]
#[ignore = "sled's file wanders with the load, up to 2.8x round 1; \
            see the file doc"]
fn churn_of_two_thousand_sessions_a_round_stops_growing_the_disk() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, ENV);
    let rounds = rounds();
    let mut sizes = Vec::new();
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
        last * 2 <= first * 3,
        "the data directory kept growing: {sizes:?} bytes per round"
    );
}

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
