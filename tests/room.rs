//! The room: nicknames, joining, leaving, chatting, waiting, sweeping and
//! restarting.

mod common;

use std::sync::Arc;
use std::time::Duration;

use natter::error::Error;
use natter::event::EventKind;
use natter::room::{Room, WaitAnswer};

/// The kinds of the events a wait answered.
fn kinds(answer: &WaitAnswer) -> Vec<EventKind> {
    let WaitAnswer::Events(delivery) = answer else {
        panic!("expected events, got {answer:?}");
    };
    delivery
        .events
        .iter()
        .map(|(_, e)| e.kind.clone())
        .collect()
}

/// Waits from `from` and returns the kinds.
async fn events_from(room: &Room, session: u64, from: u64) -> Vec<EventKind> {
    kinds(&room.wait(session, from).await.unwrap())
}

/// Nicks are checked: good ones pass (trimmed and cut to 16), a taken one
/// fails whatever its case, and anything not letters and digits fails.
#[tokio::test]
async fn nicks_are_validated() {
    let (_dir, room) = common::fresh_room().await;
    let dave = room.join("  Dave  ", "h").await.unwrap();
    assert_eq!(dave.nick, "Dave");
    assert!(matches!(
        room.join("Dave", "h").await,
        Err(Error::NickTaken(_))
    ));
    assert!(matches!(
        room.join("dAVE", "h").await,
        Err(Error::NickTaken(_))
    ));
    for bad in ["D@ve", "", "   ", "two words", "naïve", "a-b"] {
        let result = room.join(bad, "h").await;
        assert!(
            matches!(result, Err(Error::InvalidNick)),
            "{bad:?}: {result:?}"
        );
    }
    let long = room.join("abcdefghijklmnopqrstuvwxyz", "h").await.unwrap();
    assert_eq!(long.nick, "abcdefghijklmnop");
}

/// Joining twice with one nick fails the second time and leaves the
/// first session alone.
#[tokio::test]
async fn joining_twice_with_one_nick_fails() {
    let (_dir, room) = common::fresh_room().await;
    let first = room.join("Bob", "h").await.unwrap();
    assert!(room.join("Bob", "h").await.is_err());
    assert_eq!(room.users(first.session).unwrap(), vec!["Bob"]);
}

/// A join is announced to the others but not to the joiner.
#[tokio::test]
async fn a_join_is_announced_to_everyone_else() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    assert_eq!(
        events_from(&room, ann.session, 0).await,
        vec![EventKind::UserJoinedRoom { nick: "Bob".into() }]
    );
    assert_eq!(room.current_id(bob.session).unwrap(), 0);
}

/// Leaving twice, or with a session that never existed, is harmless;
/// the others hear of the first leave only, with the reason cut to 32
/// characters.
#[tokio::test]
async fn leaving_twice_or_with_a_bad_session_is_harmless() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    let from = room.current_id(ann.session).unwrap();
    let reason = "x".repeat(40);
    room.leave(bob.session, &reason).await.unwrap();
    room.leave(bob.session, "again").await.unwrap();
    room.leave(123_456_789, "never existed").await.unwrap();

    assert_eq!(
        events_from(&room, ann.session, from).await,
        vec![EventKind::UserLeftRoom {
            nick: "Bob".into(),
            reason: "x".repeat(32)
        }]
    );
    assert_eq!(room.users(ann.session).unwrap(), vec!["Ann"]);
    assert!(matches!(room.users(bob.session), Err(Error::BadSession)));
    // The nick is free again.
    room.join("bob", "h").await.unwrap();
}

/// The sender gets sent_chat_msg and everyone else chat_msg.
#[tokio::test]
async fn the_sender_gets_sent_chat_msg_and_the_others_chat_msg() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    let ann_from = room.current_id(ann.session).unwrap();
    room.chat_message(bob.session, "hi Ann").await.unwrap();

    let msg = "hi Ann".to_string();
    assert_eq!(
        events_from(&room, bob.session, 0).await,
        vec![EventKind::SentChatMsg {
            nick: "Bob".into(),
            msg: msg.clone()
        }]
    );
    assert_eq!(
        events_from(&room, ann.session, ann_from).await,
        vec![EventKind::ChatMsg {
            nick: "Bob".into(),
            msg
        }]
    );
}

/// Messages are cut to 256 characters without splitting a character, and
/// empty or blank ones are ignored.
#[tokio::test]
async fn messages_are_cut_by_characters_and_empty_ones_ignored() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    room.chat_message(ann.session, "").await.unwrap();
    room.chat_message(ann.session, "   ").await.unwrap();
    assert_eq!(room.current_id(ann.session).unwrap(), 0);

    let long = "é".repeat(300);
    room.chat_message(ann.session, &long).await.unwrap();
    let events = events_from(&room, ann.session, 0).await;
    let EventKind::SentChatMsg { msg, .. } = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(msg.chars().count(), 256);
    assert!(msg.chars().all(|c| c == 'é'));
}

/// The user list names everyone in the room; a bad session gets an error.
#[tokio::test]
async fn the_user_list_names_everyone_in_the_room() {
    let (_dir, room) = common::fresh_room().await;
    let zed = room.join("zed", "h").await.unwrap();
    room.join("Ann", "h").await.unwrap();
    room.join("bob", "h").await.unwrap();
    assert_eq!(room.users(zed.session).unwrap(), vec!["Ann", "bob", "zed"]);
    assert!(matches!(room.users(42), Err(Error::BadSession)));
}

/// The message id starts at 0, follows the mailbox, and is an error for a
/// bad session.
#[tokio::test]
async fn the_message_id_follows_the_mailbox() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    assert_eq!(room.current_id(ann.session).unwrap(), 0);
    room.chat_message(ann.session, "one").await.unwrap();
    room.chat_message(ann.session, "two").await.unwrap();
    assert_eq!(room.current_id(ann.session).unwrap(), 2);
    assert!(matches!(room.current_id(999), Err(Error::BadSession)));
}

/// Two users exchange messages through parked waits.
#[tokio::test]
async fn two_users_exchange_messages_through_wait() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    let ann_from = room.current_id(ann.session).unwrap();
    let bob_from = room.current_id(bob.session).unwrap();

    let parked = spawn_wait(&room, bob.session, bob_from);
    tokio::time::sleep(Duration::from_millis(50)).await;
    room.chat_message(ann.session, "ping").await.unwrap();
    assert_eq!(
        kinds(&parked.await.unwrap()),
        vec![EventKind::ChatMsg {
            nick: "Ann".into(),
            msg: "ping".into()
        }]
    );

    let parked = spawn_wait(&room, ann.session, ann_from + 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    room.chat_message(bob.session, "pong").await.unwrap();
    assert_eq!(
        kinds(&parked.await.unwrap()),
        vec![EventKind::ChatMsg {
            nick: "Bob".into(),
            msg: "pong".into()
        }]
    );
}

fn spawn_wait(
    room: &Arc<Room>,
    session: u64,
    from: u64,
) -> tokio::task::JoinHandle<WaitAnswer> {
    let room = room.clone();
    tokio::spawn(async move { room.wait(session, from).await.unwrap() })
}

/// Once a wait has answered, nothing more arrives unasked: the next wait
/// from the following id times out with reconnect.
#[tokio::test]
async fn after_a_wait_finishes_no_further_events_arrive_unasked() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    room.chat_message(ann.session, "only").await.unwrap();
    let answer = room.wait(ann.session, 0).await.unwrap();
    assert_eq!(kinds(&answer).len(), 1);
    assert_eq!(
        room.wait(ann.session, 1).await.unwrap(),
        WaitAnswer::Reconnect
    );
}

/// A leave ends a parked poll of that session with bad_session at once.
#[tokio::test]
async fn leave_ends_a_parked_poll_with_bad_session() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let parked = spawn_wait(&room, ann.session, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    room.leave(ann.session, "normal").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("the parked poll answered at once")
        .unwrap();
    assert_eq!(answer, WaitAnswer::BadSession);
    assert_eq!(
        room.wait(ann.session, 0).await.unwrap(),
        WaitAnswer::BadSession
    );
}

/// Idle sessions are swept: the others see them leave with "timeout", and
/// the swept session's next wait says why before it answers bad_session.
#[tokio::test]
async fn idle_clients_are_swept_and_told_why() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut settings = common::settings(dir.path());
    settings.max_idle = 1;
    let room = common::open_room(&settings).await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    // Ann keeps a poll parked the whole time, so she is never idle.
    let ann_from = room.current_id(ann.session).unwrap();
    let ann_wait = spawn_wait(&room, ann.session, ann_from);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(room.sweep_idle().await.unwrap(), 1);

    assert_eq!(
        kinds(&ann_wait.await.unwrap()),
        vec![EventKind::UserLeftRoom {
            nick: "Bob".into(),
            reason: "timeout".into()
        }]
    );
    let told = events_from(&room, bob.session, 0).await;
    let [EventKind::SystemMsg { text }] = told.as_slice() else {
        panic!("expected one notice, got {told:?}");
    };
    assert!(text.contains("timeout"), "{text}");
    assert_eq!(
        room.wait(bob.session, 1).await.unwrap(),
        WaitAnswer::BadSession
    );
    assert!(room.session_for_token(&bob.token).is_none());
    assert_eq!(room.users(ann.session).unwrap(), vec!["Ann"]);
}

/// A swept session's nick is free at once, and its notice survives a
/// restart.
#[tokio::test]
async fn a_swept_session_keeps_its_notice_across_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut settings = common::settings(dir.path());
    settings.max_idle = 1;
    let bob = {
        let room = common::open_room(&settings).await;
        let bob = room.join("Bob", "h").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(room.sweep_idle().await.unwrap(), 1);
        room.join("bob", "h").await.unwrap();
        bob
    };
    let room = common::open_room(&settings).await;
    let session = room.session_for_token(&bob.token).expect("marker kept");
    let told = events_from(&room, session, 0).await;
    assert!(matches!(told.as_slice(), [EventKind::SystemMsg { .. }]));
    assert_eq!(room.wait(session, 1).await.unwrap(), WaitAnswer::BadSession);
}

/// A restart keeps sessions, nicks and events: old tokens still work, the
/// nicks stay taken, the old msg_id returns what was sent before, and new
/// ids continue where they were.
#[tokio::test]
async fn a_restart_keeps_sessions_nicks_and_events() {
    let dir = tempfile::TempDir::new().unwrap();
    let settings = common::settings(dir.path());
    let (ann, bob, ann_from) = {
        let room = common::open_room(&settings).await;
        let ann = room.join("Ann", "h").await.unwrap();
        let bob = room.join("Bob", "h").await.unwrap();
        let ann_from = room.current_id(ann.session).unwrap();
        room.chat_message(bob.session, "before").await.unwrap();
        (ann, bob, ann_from)
    };

    let room = common::open_room(&settings).await;
    let ann_session = room.session_for_token(&ann.token).expect("Ann kept");
    let bob_session = room.session_for_token(&bob.token).expect("Bob kept");
    assert_eq!((ann_session, bob_session), (ann.session, bob.session));
    assert!(matches!(
        room.join("ANN", "h").await,
        Err(Error::NickTaken(_))
    ));
    assert_eq!(room.users(ann_session).unwrap(), vec!["Ann", "Bob"]);
    assert_eq!(
        events_from(&room, ann_session, ann_from).await,
        vec![EventKind::ChatMsg {
            nick: "Bob".into(),
            msg: "before".into()
        }]
    );

    room.chat_message(bob_session, "after").await.unwrap();
    let answer = room.wait(ann_session, ann_from + 1).await.unwrap();
    let WaitAnswer::Events(delivery) = answer else {
        panic!()
    };
    assert_eq!(delivery.events[0].0, ann_from + 1);
}
