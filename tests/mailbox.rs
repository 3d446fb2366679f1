//! The post office: creating, filling, reading and waiting on mailboxes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use natter::error::Error;
use natter::event::{Event, EventKind};
use natter::mailbox::{PostOffice, WaitOutcome};
use natter::room::Room;

fn system(text: &str) -> Event {
    Event::now(EventKind::SystemMsg { text: text.into() })
}

fn texts(outcome: &WaitOutcome) -> Vec<(u64, String)> {
    let WaitOutcome::Delivered(delivery) = outcome else {
        panic!("expected events, got {outcome:?}");
    };
    delivery
        .events
        .iter()
        .map(|(id, event)| match &event.kind {
            EventKind::SystemMsg { text } => (*id, text.clone()),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

fn office(room: &Arc<Room>) -> &PostOffice {
    room.post_office()
}

/// A listener parked on its mailbox receives a message sent to it.
#[tokio::test]
async fn a_listener_gets_a_mailbox_message() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();

    let waiter = {
        let room = room.clone();
        tokio::spawn(async move {
            office(&room)
                .wait(1, 0, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    office(&room).send(1, system("hello")).await.unwrap();

    let outcome = waiter.await.unwrap();
    assert_eq!(texts(&outcome), vec![(0, "hello".to_string())]);
}

/// Creating a mailbox that exists is an error.
#[tokio::test]
async fn creating_a_mailbox_twice_fails() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(7).await.unwrap();
    let again = office(&room).create(7).await;
    assert!(matches!(again, Err(Error::MailboxExists(7))), "{again:?}");
}

/// Deleting a mailbox twice, or one that never existed, is harmless.
#[tokio::test]
async fn deleting_a_mailbox_twice_is_harmless() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(3).await.unwrap();
    office(&room).send(3, system("x")).await.unwrap();
    office(&room).delete(3).await.unwrap();
    office(&room).delete(3).await.unwrap();
    office(&room).delete(99).await.unwrap();
    assert!(office(&room).get(3).is_none());

    // A new mailbox under the same id starts empty.
    office(&room).create(3).await.unwrap();
    let mailbox = office(&room).get(3).unwrap();
    assert_eq!(office(&room).read(&mailbox, 0).unwrap().events, vec![]);
}

/// A broadcast reaches every mailbox but the excluded ones, and a send
/// reaches only its mailbox.
#[tokio::test]
async fn send_and_broadcast_reach_their_listeners() {
    let (_dir, room) = common::fresh_room().await;
    for id in 1..=3 {
        office(&room).create(id).await.unwrap();
    }
    office(&room)
        .broadcast(system("all but 2"), &[2])
        .await
        .unwrap();
    office(&room).send(2, system("only 2")).await.unwrap();

    let read = |id| {
        let mailbox = office(&room).get(id).unwrap();
        let delivery = office(&room).read(&mailbox, 0).unwrap();
        texts(&WaitOutcome::Delivered(delivery))
    };
    assert_eq!(read(1), vec![(0, "all but 2".to_string())]);
    assert_eq!(read(2), vec![(0, "only 2".to_string())]);
    assert_eq!(read(3), vec![(0, "all but 2".to_string())]);
}

/// A send that races the park is never missed, however the two
/// interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_racing_the_park_is_never_missed() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();

    for round in 0..300u64 {
        let waiter = {
            let room = room.clone();
            tokio::spawn(async move {
                office(&room).wait(1, round, Duration::from_secs(10)).await
            })
        };
        if round % 3 == 0 {
            tokio::task::yield_now().await;
        }
        office(&room)
            .send(1, system(&round.to_string()))
            .await
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the wake-up was lost"))
            .unwrap()
            .unwrap();
        assert_eq!(texts(&outcome), vec![(round, round.to_string())]);
    }
}

/// Two polls of one mailbox (two tabs) both wake on one send.
#[tokio::test]
async fn two_polls_of_one_mailbox_both_wake() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();
    let spawn_wait = || {
        let room = room.clone();
        tokio::spawn(async move {
            office(&room)
                .wait(1, 0, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    let (first, second) = (spawn_wait(), spawn_wait());
    tokio::time::sleep(Duration::from_millis(50)).await;
    office(&room).send(1, system("both")).await.unwrap();

    for waiter in [first, second] {
        let outcome = waiter.await.unwrap();
        assert_eq!(texts(&outcome), vec![(0, "both".to_string())]);
    }
}

/// A wait with nothing to deliver ends when its timeout passes.
#[tokio::test]
async fn an_empty_wait_times_out() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();
    let outcome = office(&room)
        .wait(1, 0, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(outcome, WaitOutcome::TimedOut);
}

/// Deleting a mailbox ends the polls parked on it.
#[tokio::test]
async fn deleting_a_mailbox_ends_its_parked_polls() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();
    let waiter = {
        let room = room.clone();
        tokio::spawn(async move {
            office(&room)
                .wait(1, 0, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    office(&room).delete(1).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the parked poll ended")
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Closed);
}

/// Ids start at 0, only grow, and keep growing after a restart.
#[tokio::test]
async fn ids_keep_growing_across_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let settings = common::settings(dir.path());
    // A mailbox needs a session to survive a restart.
    let token = {
        let room = common::open_room(&settings).await;
        let joined = room.join("keeper", "h").await.unwrap();
        for n in 0..3 {
            let event = system(&n.to_string());
            office(&room).send(joined.session, event).await.unwrap();
        }
        joined.token
    };
    let room = common::open_room(&settings).await;
    let session = room.session_for_token(&token).unwrap();
    office(&room).send(session, system("after")).await.unwrap();
    let mailbox = office(&room).get(session).unwrap();
    let ids: Vec<u64> = office(&room)
        .read(&mailbox, 0)
        .unwrap()
        .events
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

/// A mailbox keeps only its newest `mailbox_capacity` events; a reader
/// asking for dropped ones is told where the gap is.
#[tokio::test]
async fn a_full_mailbox_drops_the_oldest_and_reports_the_gap() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut settings = common::settings(dir.path());
    settings.mailbox_capacity = 5;
    let room = common::open_room(&settings).await;
    office(&room).create(1).await.unwrap();
    for n in 0..12 {
        office(&room).send(1, system(&n.to_string())).await.unwrap();
    }
    let mailbox = office(&room).get(1).unwrap();
    let delivery = office(&room).read(&mailbox, 2).unwrap();
    assert_eq!(delivery.gap, Some((2, 6)));
    let ids: Vec<u64> = delivery.events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![7, 8, 9, 10, 11]);
    assert_eq!(office(&room).read(&mailbox, 9).unwrap().gap, None);
}

/// Asking for an id beyond anything the mailbox held answers resync at
/// once instead of parking forever.
#[tokio::test]
async fn an_id_beyond_the_mailbox_answers_resync() {
    let (_dir, room) = common::fresh_room().await;
    office(&room).create(1).await.unwrap();
    office(&room).send(1, system("one")).await.unwrap();
    let outcome = office(&room)
        .wait(1, 50, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Resync);
}

/// A woken poll reads the newest events from memory; what it gets, JSON
/// included, is exactly what a read from disk after a restart gets.
#[tokio::test]
async fn reads_from_memory_match_reads_from_disk() {
    let dir = tempfile::TempDir::new().unwrap();
    let settings = common::settings(dir.path());
    let (token, from_memory) = {
        let room = common::open_room(&settings).await;
        let joined = room.join("keeper", "h").await.unwrap();
        for n in 0..40 {
            let event = system(&format!("line {n} \"quoted\" é"));
            office(&room).send(joined.session, event).await.unwrap();
        }
        let mailbox = office(&room).get(joined.session).unwrap();
        let delivery = office(&room).read(&mailbox, 35).unwrap();
        (joined.token, delivery)
    };
    let room = common::open_room(&settings).await;
    let session = room.session_for_token(&token).unwrap();
    let mailbox = office(&room).get(session).unwrap();
    let from_disk = office(&room).read(&mailbox, 35).unwrap();

    assert_eq!(from_memory.events.len(), 5);
    assert_eq!(from_memory, from_disk);
    for (id, event) in &from_memory.events {
        let mut text = String::new();
        event.write_json(*id, &mut text);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, event.to_json(*id));
    }
}
