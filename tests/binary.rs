//! The real binary, as a user runs it: two people chat over HTTP, the
//! server is stopped and started, and both carry on.

mod common;

use common::process::{self, Session};
use serde_json::json;

/// Two sessions chat, the server restarts, and both keep their sessions,
/// their nicks and every message sent since their last poll.
#[test]
fn two_people_chat_across_a_restart_of_the_binary() {
    let (_keep, dir) = process::data_dir();
    let server = process::start(&dir, &[]);
    let ann = Session::login(&server, "Ann");
    let bob = Session::login(&server, "Bob");
    let from = ann.start();
    bob.say("before the restart");
    let first = ann.wait(from);
    assert_eq!(first["response"][0]["d"]["msg"], "before the restart");

    // Bob sends again; Ann has not polled for it when the server stops.
    bob.say("sent before the stop, read after");
    server.terminate();

    let server = process::start(&dir, &[]);
    let (ann, bob) = (ann.on(&server), bob.on(&server));
    let missed = ann.wait(from + 1);
    assert_eq!(missed["response"][0]["id"], from + 1);
    assert_eq!(
        missed["response"][0]["d"]["msg"],
        "sent before the stop, read after"
    );
    assert_eq!(
        ann.get("/chat/online/").unwrap()["response"],
        json!(["Ann", "Bob"])
    );

    bob.say("after the restart");
    let next = ann.wait(from + 2);
    assert_eq!(next["response"][0]["id"], from + 2);
    assert_eq!(next["response"][0]["d"]["msg"], "after the restart");

    // The nick is still Bob's.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let refused = agent
        .post(&server.url("/login/"))
        .send_form(&[("nick", "bob")]);
    assert!(matches!(refused, Err(ureq::Error::Status(409, _))));
}
