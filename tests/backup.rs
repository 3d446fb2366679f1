//! `natter backup` and `natter restore` with the real binary: a backup of
//! a running server under write load, a backup of a stopped one, and the
//! refusals that keep an operator from overwriting data.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{self, Exited, Session};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `natter backup` or `natter restore` on `data`.
fn natter(data: &Path, args: &[&str]) -> Exited {
    process::run(data, args, LIMIT)
}

/// A backup taken while senders keep sending holds every message
/// acknowledged before it began; the restored server opens with all of
/// it, sessions included, hands out fresh session ids, and tells a client
/// that is ahead of the restored mailbox to resync.
#[test]
fn a_backup_under_write_load_restores_every_acknowledged_message() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &process::UNLIMITED);
    let senders: Vec<Session> = (0..3)
        .map(|i| Session::login(&server, &format!("Sender{i}")))
        .collect();
    // A restart moves sled's id counter on; a restored directory starts
    // it again, which must not hand out the listener's id twice.
    server.terminate();
    let server = process::start(&dir, &process::UNLIMITED);
    let listener = Session::login(&server, "Listener");
    let mode = std::fs::metadata(dir.join("natter-control")).unwrap();
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, acked, stop) = (s.on(&server), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let text = format!("s{i}m{n}");
                    s.say(&text);
                    acked.lock().unwrap().push(text);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    let before: HashSet<String> =
        acked.lock().unwrap().iter().cloned().collect();
    let backup = dir.parent().unwrap().join("backup");
    let made = natter(&dir, &["backup", backup.to_str().unwrap()]);
    assert!(made.success, "backup failed: {}", made.output);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("a sender thread");
    }
    let ahead = listener.start();
    let after_backup = acked.lock().unwrap().len() - before.len();
    assert!(after_backup > 0, "nothing was sent after the backup");
    server.terminate();

    let (_keep2, restored) = process::data_dir();
    let made = natter(&restored, &["restore", backup.to_str().unwrap()]);
    assert!(made.success, "restore failed: {}", made.output);
    let server = process::start(&restored, &[]);
    let listener = listener.on(&server);

    let events = listener.read_all();
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["t"] == "chat_msg")
        .filter_map(|e| e["d"]["msg"].as_str())
        .collect();
    for text in &before {
        let copies = texts.iter().filter(|t| *t == text).count();
        assert_eq!(copies, 1, "{text} in the restored server");
    }
    let online = listener.get("/chat/online/").unwrap();
    assert_eq!(
        online["response"],
        json!(["Listener", "Sender0", "Sender1", "Sender2"])
    );

    // A browser that read past the backup is told to start over.
    assert!(ahead > listener.start());
    let resync = listener.wait(ahead);
    assert_eq!(resync, json!({"status": "error", "response": "resync"}));

    // New sessions do not collide with restored ones.
    let newcomer = Session::login(&server, "Newcomer");
    newcomer.say("hello after the restore");
    let last = listener.read_all().pop().unwrap();
    assert_eq!(last["d"]["msg"], "hello after the restore");
    senders[0]
        .on(&server)
        .say("and the old sessions still send");
}

/// With the server stopped, `natter backup` reads the directory itself,
/// and the backup restores into a server that has the session.
#[test]
fn a_backup_of_a_stopped_server_reads_the_directory_itself() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    let ann = Session::login(&server, "Ann");
    ann.say("hello");
    server.terminate();

    let backup = dir.parent().unwrap().join("backup");
    let made = natter(&dir, &["backup", backup.to_str().unwrap()]);
    assert!(made.success, "{}", made.output);

    let (_keep2, restored) = process::data_dir();
    let made = natter(&restored, &["restore", backup.to_str().unwrap()]);
    assert!(made.success, "{}", made.output);
    let server = process::start(&restored, &[]);
    let events = ann.on(&server).read_all();
    assert_eq!(events.last().unwrap()["d"]["msg"], "hello");
}

/// Restore refuses a data directory that is not empty (a running
/// server's included) and a source that is not a backup; backup refuses
/// a target that is not empty. Nothing is changed.
#[test]
fn backup_and_restore_refuse_to_overwrite_anything() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    let ann = Session::login(&server, "Ann");
    let backup = dir.parent().unwrap().join("backup");
    let made = natter(&dir, &["backup", backup.to_str().unwrap()]);
    assert!(made.success, "{}", made.output);

    let again = natter(&dir, &["backup", backup.to_str().unwrap()]);
    assert!(!again.success);
    assert!(again.output.contains("is not empty"), "{}", again.output);

    let onto_running = natter(&dir, &["restore", backup.to_str().unwrap()]);
    assert!(!onto_running.success);
    assert!(
        onto_running.output.contains("is not empty"),
        "{}",
        onto_running.output
    );
    ann.say("the server is unharmed");

    let (_keep2, empty) = process::data_dir();
    let from_running = natter(&empty, &["restore", dir.to_str().unwrap()]);
    assert!(!from_running.success);
    assert!(
        from_running
            .output
            .contains("in use by another Natter process"),
        "{}",
        from_running.output
    );
    let nothing = dir.parent().unwrap().join("nothing");
    let not_backup = natter(&empty, &["restore", nothing.to_str().unwrap()]);
    assert!(!not_backup.success);
    assert!(
        not_backup.output.contains("is not a Natter backup"),
        "{}",
        not_backup.output
    );
    let inside = dir.join("backup");
    let refused = natter(&dir, &["backup", inside.to_str().unwrap()]);
    assert!(!refused.success);
    assert!(
        refused.output.contains("inside the data"),
        "{}",
        refused.output
    );
    // Also when the path reaches it through `..` or a symbolic link.
    let parent = dir.parent().unwrap();
    std::fs::create_dir(parent.join("elsewhere")).unwrap();
    let dotted = parent.join("elsewhere/../data/dotted");
    std::os::unix::fs::symlink(&dir, parent.join("link")).unwrap();
    let linked = parent.join("link/linked");
    for sneaky in [&dotted, &linked] {
        let refused = natter(&dir, &["backup", sneaky.to_str().unwrap()]);
        assert!(!refused.success, "{}", refused.output);
        assert!(
            refused.output.contains("inside the data"),
            "{}",
            refused.output
        );
    }
    assert!(!dir.join("dotted").exists() && !dir.join("linked").exists());

    // A backup cut short (here: without its final mark) is refused.
    std::fs::remove_file(backup.join("natter-format")).unwrap();
    let cut = natter(&empty, &["restore", backup.to_str().unwrap()]);
    assert!(!cut.success);
    assert!(cut.output.contains("cut short"), "{}", cut.output);
    assert!(!empty.exists(), "the data directory was created");
    server.terminate();
}

/// A backup cut short keeps the file that marks it unfinished, so a
/// restore refuses it, and so does a server started on it, which would
/// otherwise mark it as complete. A finished backup has no such file.
#[test]
fn a_backup_cut_short_is_refused_by_restore_and_by_the_server() {
    let (_keep, dir, backup) = one_message_backed_up();
    let unfinished = backup.join(natter::store::UNFINISHED_FILE);
    assert!(
        !unfinished.exists(),
        "a finished backup is marked unfinished"
    );

    // What a backup stopped halfway leaves: the file, and no format mark.
    std::fs::write(&unfinished, "").unwrap();
    std::fs::remove_file(backup.join("natter-format")).unwrap();
    let empty = dir.parent().unwrap().join("restored");
    let restored = natter(&empty, &["restore", backup.to_str().unwrap()]);
    assert!(!restored.success);
    assert!(restored.output.contains("cut short"), "{}", restored.output);

    server_refuses(&backup, "cut short");
    assert!(
        !backup.join("natter-format").exists(),
        "the server marked the cut-short backup as complete"
    );
}

/// The backup endpoint refuses a request without the token from the
/// control file, even from loopback.
#[test]
fn the_backup_endpoint_wants_the_token() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    let target = dir.parent().unwrap().join("stolen");
    let agent = ureq::agent();
    for token in ["", "0000"] {
        let refused = agent
            .post(&server.url("/control/backup"))
            .set("X-Natter-Token", token)
            .send_string(target.to_str().unwrap());
        let Err(ureq::Error::Status(403, res)) = refused else {
            panic!("not refused: {refused:?}");
        };
        let body: serde_json::Value = res.into_json().unwrap();
        assert_eq!(body["response"], "missing or wrong control token");
    }
    assert!(!target.exists());
    server.terminate();
}

/// The backup endpoint looks at the TCP peer, not at a header: a remote
/// peer is refused even when the proxy header claims loopback.
#[rocket::async_test]
async fn the_backup_endpoint_refuses_a_peer_that_is_not_loopback() {
    let dir = tempfile::TempDir::new().unwrap();
    let extra = [("ip_header", json!("X-Real-IP"))];
    let client = common::client(dir.path(), &extra).await;
    let ask = |peer: &str| {
        client
            .post("/control/backup")
            .remote(peer.parse().unwrap())
            .header(rocket::http::Header::new("X-Real-IP", "127.0.0.1"))
            .header(rocket::http::Header::new("X-Natter-Token", "guess"))
            .body("/tmp/natter-stolen")
    };
    let remote = ask("10.1.2.3:4000").dispatch().await;
    assert_eq!(remote.status(), rocket::http::Status::Forbidden);
    let body = remote.into_string().await.unwrap();
    assert!(body.contains("loopback peers only"), "{body}");

    // From loopback it gets as far as the token.
    let local = ask("127.0.0.1:4000").dispatch().await;
    assert_eq!(local.status(), rocket::http::Status::Forbidden);
    let body = local.into_string().await.unwrap();
    assert!(body.contains("wrong control token"), "{body}");
}

/// A backup whose sled file was damaged (here: zeroed) is refused by
/// restore with a message about the backup, and the data directory is
/// not created.
#[test]
fn a_damaged_backup_is_refused_by_restore() {
    let (_keep, dir, backup) = one_message_backed_up();

    let db = backup.join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0u8; len]).unwrap();
    let empty = dir.parent().unwrap().join("restored");
    let restored = natter(&empty, &["restore", backup.to_str().unwrap()]);
    assert!(!restored.success, "{}", restored.output);
    assert!(
        restored.output.contains("the backup at")
            && restored.output.contains("damaged")
            && !restored.output.contains("refusing to start"),
        "{}",
        restored.output
    );
    assert!(!empty.exists(), "the data directory was created");
}

/// A backup whose sled file was cut short or had bytes overwritten is
/// refused by restore and by a server started on it (sled alone reads
/// such a file as far as it can and keeps what it read), and a restore
/// leaves the backup it reads byte for byte as it was.
#[test]
fn a_truncated_backup_is_refused_and_restore_never_writes_to_its_source() {
    let (_keep, dir, backup) = one_message_backed_up();
    let before = natter::store::files_digest(&backup).unwrap();
    let fresh = dir.parent().unwrap().join("fresh");
    let restored = natter(&fresh, &["restore", backup.to_str().unwrap()]);
    assert!(restored.success, "{}", restored.output);
    assert_eq!(natter::store::files_digest(&backup).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".natter-restore"))
        .collect();
    assert!(leftovers.is_empty(), "scratch copies left: {leftovers:?}");

    let db = backup.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let empty = dir.parent().unwrap().join("restored");
    let refused = natter(&empty, &["restore", backup.to_str().unwrap()]);
    assert!(!refused.success, "{}", refused.output);
    assert!(refused.output.contains("is damaged"), "{}", refused.output);
    assert!(!empty.exists(), "the data directory was created");

    server_refuses(&backup, "damaged");
}

/// A server started straight on an intact backup opens it with its
/// message, and from then on it is a data directory like any other.
#[test]
fn a_server_started_on_an_intact_backup_opens_it() {
    let (_keep, _dir, backup) = one_message_backed_up();
    let server = process::start(&backup, &[]);
    let ann = Session::login(&server, "Bob");
    let history = ann.get("/chat/history/").unwrap();
    assert!(history.to_string().contains("keep me"), "{history}");
    server.terminate();
    assert!(!backup.join(natter::store::DIGEST_FILE).exists());
    let again = process::start(&backup, &[]);
    let online = ann.on(&again).get("/chat/online/").unwrap();
    assert_eq!(online["status"], "ok", "{online}");
    again.terminate();
}

/// A stopped server's data directory with one message in it, and a
/// backup of it taken while it ran, beside it.
fn one_message_backed_up() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    Session::login(&server, "Ann").say("keep me");
    let backup = dir.parent().unwrap().join("backup");
    let made = natter(&dir, &["backup", backup.to_str().unwrap()]);
    assert!(made.success, "{}", made.output);
    server.terminate();
    (keep, dir, backup)
}

/// A server started on `dir` refuses to start, saying `why`.
fn server_refuses(dir: &Path, why: &str) {
    let started = process::run(dir, &[], Duration::from_secs(20));
    assert!(!started.success, "{}", started.output);
    assert!(
        started.output.contains(why)
            && started.output.contains("refusing to start"),
        "{}",
        started.output
    );
}
