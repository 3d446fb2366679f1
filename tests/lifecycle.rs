//! Starting and stopping the real binary: one server per data directory,
//! clean shutdown with parked polls, and refusing data it cannot read.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{self, Session};
use natter::store::{event_key, head_key, CLIENTS, MAILBOXES};

/// A second server on a directory in use exits at once with a clear
/// message, and the first one keeps serving.
#[test]
fn a_second_server_on_the_same_directory_exits_at_once() {
    let (_keep, dir) = process::data_dir();
    let first = process::start(&dir, &[]);
    let ann = Session::login(&first, "Ann");

    let second = process::run(&dir, &[], Duration::from_secs(20));
    assert!(!second.success, "the second server exited with success");
    assert!(
        second
            .output
            .contains("is in use by another Natter process"),
        "unclear message: {}",
        second.output
    );
    assert!(!second.output.contains("panicked"), "{}", second.output);
    assert!(
        second.took < Duration::from_secs(5),
        "took {:?}",
        second.took
    );

    ann.say("still here");
    first.terminate();
}

/// Stopping and at once starting again works, several times over, and
/// keeps the sessions.
#[test]
fn a_restart_right_after_a_stop_opens_the_directory() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    let ann = Session::login(&server, "Ann");
    let from = ann.start();
    server.terminate();
    for round in 0..3 {
        let server = process::start(&dir, &[]);
        let ann = ann.on(&server);
        ann.say(&format!("round {round}"));
        assert_eq!(ann.start(), from + round + 1);
        server.terminate();
    }
}

/// SIGTERM answers 20 parked polls with "reconnect" at once, flushes,
/// releases the lock and exits within 2 s; the next server opens the
/// directory with every session.
#[test]
fn sigterm_answers_twenty_parked_polls_and_exits_within_two_seconds() {
    let (_keep, dir) = process::data_dir();
    // Twenty sessions from one address: more than the shipped cap.
    let [rate, cap] = process::UNLIMITED;
    let env = [("ROCKET_COMET_TIMEOUT", "60"), rate, cap];
    let server = process::start(&dir, &env);
    let sessions: Vec<Session> = (0..20)
        .map(|i| Session::login(&server, &format!("User{i}")))
        .collect();
    assert!(dir.join("natter-control").is_file());

    let polls: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (session, from) = (s.on(&server), s.start());
            std::thread::spawn(move || (session.wait(from), Instant::now()))
        })
        .collect();
    // Long enough for every poll to park.
    std::thread::sleep(Duration::from_millis(700));

    let signalled = Instant::now();
    let took = server.terminate();
    println!("exit {took:?} after SIGTERM with 20 parked polls");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    for poll in polls {
        let (reply, answered) = poll.join().expect("a poll thread");
        assert_eq!(reply["response"], "reconnect", "{reply}");
        let after = answered.duration_since(signalled);
        assert!(after < Duration::from_secs(2), "answered after {after:?}");
    }
    assert!(!dir.join("natter-control").exists(), "control file left");

    let server = process::start(&dir, &[]);
    let online = sessions[0].on(&server).get("/chat/online/").unwrap();
    assert_eq!(online["response"].as_array().unwrap().len(), 20);
}

/// A data directory whose sled files were wiped is refused with a
/// message that says so, instead of starting empty.
#[test]
fn a_directory_whose_files_were_wiped_is_refused() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    Session::login(&server, "Ann").say("keep me");
    server.terminate();

    let db = dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0u8; len]).unwrap();
    let refused = process::run(&dir, &[], Duration::from_secs(20));
    assert!(!refused.success);
    assert!(
        refused.output.contains("cannot read the data directory")
            && refused.output.contains("refusing to start"),
        "{}",
        refused.output
    );
    assert!(!refused.output.contains("panicked"), "{}", refused.output);
}

/// A directory holding other files but no sled database is refused and
/// left as it was.
#[test]
fn a_directory_of_other_files_is_refused_and_left_alone() {
    let (_keep, dir) = process::data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();

    let refused = process::run(&dir, &[], Duration::from_secs(20));
    assert!(!refused.success);
    assert!(
        refused.output.contains("holds files but no sled `db` file"),
        "{}",
        refused.output
    );
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1, "the directory was changed");
}

/// An event that cannot be decoded stops the start-up with its tree and
/// key, and stays where it was.
#[test]
fn an_undecodable_event_stops_the_start_naming_its_tree_and_key() {
    let (_keep, dir) = process::data_dir();
    let session = stopped_server_with_one_session(&dir);
    let key = event_key(session, 77);
    plant(&dir, MAILBOXES, &key, b"\xff\xff\xff\xff not an event");
    refused_naming(&dir, MAILBOXES, &key);
}

/// A client record that cannot be decoded is reported the same way.
#[test]
fn an_undecodable_client_record_stops_the_start_naming_its_tree_and_key() {
    let (_keep, dir) = process::data_dir();
    let session = stopped_server_with_one_session(&dir);
    let key = head_key(session);
    plant(&dir, CLIENTS, &key, b"\x07");
    refused_naming(&dir, CLIENTS, &key);
}

/// Runs a server with one session, stops it, and returns the session id.
fn stopped_server_with_one_session(dir: &Path) -> u64 {
    let server = process::start(dir, &[]);
    Session::login(&server, "Ann").say("hello");
    server.terminate();
    let db = sled::open(dir).unwrap();
    let (key, _) = db.open_tree(CLIENTS).unwrap().first().unwrap().unwrap();
    u64::from_be_bytes(key.as_ref().try_into().unwrap())
}

/// Writes a raw value into a tree of a stopped server's directory.
fn plant(dir: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled::open(dir).unwrap();
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

fn refused_naming(dir: &Path, tree: &str, key: &[u8]) {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let refused = process::run(dir, &[], Duration::from_secs(20));
    assert!(!refused.success, "it started: {}", refused.output);
    let expected = format!("in tree `{tree}` at key {hex}");
    assert!(refused.output.contains(&expected), "{}", refused.output);
    assert!(!refused.output.contains("panicked"), "{}", refused.output);

    // Reported, not dropped.
    let db = sled::open(dir).unwrap();
    assert!(db.open_tree(tree).unwrap().get(key).unwrap().is_some());
}
