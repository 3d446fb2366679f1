//! The stored format of this release, pinned by golden bytes: every kind
//! of record Natter stores (mailbox head, each event kind, client record,
//! ban, history line) as bincode of its versioned enum. A later release must still
//! decode these; changing a record means a new variant, a migration, and
//! new golden bytes beside these, never editing them.

mod common;

use common::process::{self, Session};
use natter::error::Error;
use natter::event::{Event, EventKind};
use natter::store::{
    decode, encode, event_key, head_key, line_key, BanRecord, ClientRecord,
    Ended, StoredBan, StoredClient, StoredEvent, StoredHead, StoredLine, BANS,
    CLIENTS, FORMAT, FORMAT_FILE, HISTORY, HISTORY_HEAD, MAILBOXES,
};
use serde_json::json;

/// The head of a mailbox whose next id is 7.
const HEAD: &str = "000000000700000000000000";

/// One event of each kind, at ts 1764790000000 + its index.
const EVENTS: [&str; 7] = [
    "000000008059aee59a010000000000000300000000000000426f62",
    "000000008159aee59a010000010000000300000000000000426f620600000000000000\
     6e6f726d616c",
    "000000008259aee59a010000020000000300000000000000426f620500000000000000\
     686920c3a9",
    "000000008359aee59a010000030000000400000000000000476f6c6402000000000000\
     00796f",
    "000000008459aee59a0100000400000004000000000000006e6f7465",
    "000000008559aee59a010000050000000400000000000000526f6f74",
    "000000008659aee59a010000060000000400000000000000526f6f74",
];

/// Gold's client record: host 127.0.0.1, the SHA-256 of "golden-token",
/// not an admin, not ended.
const CLIENT: &str = "000000000400000000000000476f6c6409000000000000003132372e\
     302e302e313d4ee2c2c5688ef85fd7e49d2e45fa8c1a2df490ae0b9e0a119fa9c9e33b\
     a55f0000";

/// An ended admin session's record ("timeout" at 1764790000000).
const ENDED_CLIENT: &str = "0000000003000000000000004f6c640900000000000000313\
     2372e302e302e313d4ee2c2c5688ef85fd7e49d2e45fa8c1a2df490ae0b9e0a119fa9c\
     9e33ba55f0101070000000000000074696d656f75748059aee59a010000";

/// A ban of 127.0.0.1 until ts 1764790000000 + 10^12 (2057), placed by
/// Root on Bob for "spam".
const BAN: &str = "00000000806953ba83020000040000000000000073706\
     16d0300000000000000426f620400000000000000526f6f74";

/// A history line: Bob said "hi é" at ts 1764790000000.
const LINE: &str = "000000008059aee59a0100000300000000000000426f620500000\
     000000000686920c3a9";

/// The history head: the next line id is 1.
const HISTORY_NEXT: &str = "000000000100000000000000";

const TS: u64 = 1_764_790_000_000;

fn bytes(hex: &str) -> Vec<u8> {
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn event(i: u64, kind: EventKind) -> StoredEvent {
    StoredEvent::V1(Event {
        ts_ms: TS + i,
        kind,
    })
}

fn expected_events() -> Vec<StoredEvent> {
    let s = |text: &str| text.to_string();
    vec![
        event(0, EventKind::UserJoinedRoom { nick: s("Bob") }),
        event(
            1,
            EventKind::UserLeftRoom {
                nick: s("Bob"),
                reason: s("normal"),
            },
        ),
        event(
            2,
            EventKind::ChatMsg {
                nick: s("Bob"),
                msg: s("hi é"),
            },
        ),
        event(
            3,
            EventKind::SentChatMsg {
                nick: s("Gold"),
                msg: s("yo"),
            },
        ),
        event(4, EventKind::SystemMsg { text: s("note") }),
        event(5, EventKind::AdminLoggedIn { nick: s("Root") }),
        event(6, EventKind::AdminLoggedOut { nick: s("Root") }),
    ]
}

fn gold() -> ClientRecord {
    ClientRecord {
        nick: "Gold".into(),
        host: "127.0.0.1".into(),
        token_hash: natter::room::hash_token("golden-token"),
        admin: false,
        ended: None,
    }
}

/// Every record kind of format 1 decodes to what it held, and this
/// release still writes exactly those bytes.
#[test]
fn every_record_kind_of_format_one_decodes() {
    assert_eq!(FORMAT, 1, "a new format needs new golden bytes here");
    let key = head_key(5);

    let head: StoredHead = decode(MAILBOXES, &key, &bytes(HEAD)).unwrap();
    assert!(matches!(head, StoredHead::V1 { next_id: 7 }));
    assert_eq!(encode(&head).unwrap(), bytes(HEAD));

    for (hex, expected) in EVENTS.iter().zip(expected_events()) {
        let got: StoredEvent = decode(MAILBOXES, &key, &bytes(hex)).unwrap();
        let (StoredEvent::V1(got), StoredEvent::V1(want)) = (&got, &expected);
        assert_eq!(got, want);
        assert_eq!(encode(&expected).unwrap(), bytes(hex));
    }

    let StoredClient::V1(client) =
        decode(CLIENTS, &key, &bytes(CLIENT)).unwrap();
    assert_eq!(client, gold());
    let StoredClient::V1(ended) =
        decode(CLIENTS, &key, &bytes(ENDED_CLIENT)).unwrap();
    let expected = ClientRecord {
        nick: "Old".into(),
        admin: true,
        ended: Some(Ended {
            reason: "timeout".into(),
            at_ms: TS,
        }),
        ..gold()
    };
    assert_eq!(ended, expected);
    assert_eq!(
        encode(&StoredClient::V1(expected)).unwrap(),
        bytes(ENDED_CLIENT)
    );

    let host = b"127.0.0.1";
    let StoredBan::V1(ban) = decode(BANS, host, &bytes(BAN)).unwrap();
    assert_eq!(ban, golden_ban());
    assert_eq!(encode(&StoredBan::V1(golden_ban())).unwrap(), bytes(BAN));

    let line: StoredLine = decode(HISTORY, &line_key(0), &bytes(LINE)).unwrap();
    let StoredLine::V1 { ts_ms, nick, msg } = &line;
    assert_eq!((*ts_ms, nick.as_str(), msg.as_str()), (TS, "Bob", "hi é"));
    assert_eq!(encode(&line).unwrap(), bytes(LINE));
}

fn golden_ban() -> BanRecord {
    BanRecord {
        until_ms: TS + 1_000_000_000_000,
        reason: "spam".into(),
        nick: "Bob".into(),
        by: "Root".into(),
    }
}

/// A cut-off record is an error naming its tree and key, not a panic and
/// not a default value.
#[test]
fn a_record_cut_short_is_reported_with_its_tree_and_key() {
    let whole = bytes(EVENTS[2]);
    let key = event_key(5, 2);
    let cut = decode::<StoredEvent>(MAILBOXES, &key, &whole[..whole.len() - 3]);
    match cut {
        Err(Error::Corrupt { tree, key, .. }) => {
            assert_eq!(tree, MAILBOXES);
            assert_eq!(key, "00000000000000050000000000000002");
        }
        other => panic!("not reported as corrupt: {other:?}"),
    }
}

/// A data directory holding the golden records is served by the real
/// binary: Gold's cookie still works, every event reads back with its id
/// and fields, and the nick is taken.
#[test]
fn the_binary_serves_a_directory_of_golden_records() {
    let (_keep, dir) = process::data_dir();
    {
        let db = sled::open(&dir).unwrap();
        let mailboxes = db.open_tree(MAILBOXES).unwrap();
        mailboxes.insert(head_key(5), bytes(HEAD)).unwrap();
        for (id, hex) in EVENTS.iter().enumerate() {
            mailboxes
                .insert(event_key(5, id as u64), bytes(hex))
                .unwrap();
        }
        let clients = db.open_tree(CLIENTS).unwrap();
        clients.insert(head_key(5), bytes(CLIENT)).unwrap();
        let bans = db.open_tree(BANS).unwrap();
        bans.insert("127.0.0.1", bytes(BAN)).unwrap();
        let history = db.open_tree(HISTORY).unwrap();
        history.insert(HISTORY_HEAD, bytes(HISTORY_NEXT)).unwrap();
        history.insert(line_key(0), bytes(LINE)).unwrap();
        db.flush().unwrap();
    }
    std::fs::write(dir.join(FORMAT_FILE), "1\n").unwrap();

    let server = process::start(&dir, &[]);
    let gold = Session::with_token(&server, "golden-token");
    assert_eq!(
        gold.get("/chat/online/").unwrap()["response"],
        json!(["Gold"])
    );
    let events = gold.read_all();
    let expected = [
        json!({"id": 0, "t": "user_joined_room", "d": "Bob", "ts": TS}),
        json!({"id": 1, "t": "user_left_room",
               "d": {"nick": "Bob", "reason": "normal"}, "ts": TS + 1}),
        json!({"id": 2, "t": "chat_msg",
               "d": {"nick": "Bob", "msg": "hi é"}, "ts": TS + 2}),
        json!({"id": 3, "t": "sent_chat_msg",
               "d": {"nick": "Gold", "msg": "yo"}, "ts": TS + 3}),
        json!({"id": 4, "t": "system_msg", "d": "note", "ts": TS + 4}),
        json!({"id": 5, "t": "admin_logged_in", "d": "Root", "ts": TS + 5}),
        json!({"id": 6, "t": "admin_logged_out", "d": "Root", "ts": TS + 6}),
    ];
    assert_eq!(events, expected);
    assert_eq!(
        gold.get("/chat/history/").unwrap()["response"],
        json!([{"id": 0, "t": "chat_msg",
                "d": {"nick": "Bob", "msg": "hi é"}, "ts": TS}])
    );
    gold.say("still writing format 1");
    assert_eq!(gold.start(), 8);
    let history = gold.get("/chat/history/").unwrap();
    assert_eq!(history["response"][1]["id"], 1, "{history}");

    // The golden ban still holds: 127.0.0.1 cannot log in again.
    let refused =
        ureq::post(&server.url("/login/")).send_form(&[("nick", "Another")]);
    let page = match refused {
        Err(ureq::Error::Status(403, res)) => res.into_string().unwrap(),
        other => panic!("a login from a banned host: {other:?}"),
    };
    assert!(page.to_lowercase().contains("banned"), "{page}");
    server.terminate();
}
