//! Moderation: chat-box commands, administrators, kicks, bans, the rate
//! limit, the per-host cap, cross-site refusal and session safety, first
//! on the room and then over HTTP.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::process::{self, Session};
use natter::config::Settings;
use natter::error::Error;
use natter::event::EventKind;
use natter::room::{Joined, Room, WaitAnswer};
use rocket::http::{ContentType, Cookie, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The admin password every test server is configured with.
const PASSWORD: &str = "correct horse";

fn digest_hex() -> String {
    Sha256::digest(PASSWORD.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Test settings with the admin password configured.
fn settings(dir: &Path) -> Settings {
    Settings {
        admin_password_sha256: Some(digest_hex().into()),
        ..common::settings(dir)
    }
}

async fn room_with(settings: &Settings) -> Arc<Room> {
    common::open_room(settings).await
}

async fn fresh() -> (TempDir, Arc<Room>) {
    let dir = TempDir::new().unwrap();
    let room = room_with(&settings(dir.path())).await;
    (dir, room)
}

/// Every event in a session's mailbox, without waiting or touching it.
fn events(room: &Room, session: u64) -> Vec<EventKind> {
    let office = room.post_office();
    let Some(mailbox) = office.get(session) else {
        return Vec::new();
    };
    let delivery = office.read(&mailbox, 0).unwrap();
    delivery
        .events
        .into_iter()
        .map(|(_, e)| e.kind.clone())
        .collect()
}

/// The texts of a session's system messages, oldest first.
fn notices(room: &Room, session: u64) -> Vec<String> {
    events(room, session)
        .into_iter()
        .filter_map(|kind| match kind {
            EventKind::SystemMsg { text } => Some(text),
            _ => None,
        })
        .collect()
}

/// Types `line` as `who` and returns the system message it answered.
async fn reply(room: &Room, who: &Joined, line: &str) -> String {
    let before = notices(room, who.session).len();
    room.chat_message(who.session, line).await.unwrap();
    let after = notices(room, who.session);
    assert_eq!(after.len(), before + 1, "{line:?} got no single reply");
    after.last().unwrap().clone()
}

/// Asserts that `text` holds every word, ignoring case.
fn assert_words(text: &str, words: &[&str]) {
    let lower = text.to_lowercase();
    for word in words {
        assert!(lower.contains(&word.to_lowercase()), "{word:?} in {text:?}");
    }
}

/// Joins Ann on host `admin-host` and makes her an administrator.
async fn admin(room: &Room) -> Joined {
    let ann = room.join("Ann", "admin-host").await.unwrap();
    let text = reply(room, &ann, &format!("/auth \"{PASSWORD}\"")).await;
    assert_words(&text, &["authenticated"]);
    ann
}

/// /help lists /auth to everyone and the admin commands to admins only.
#[tokio::test]
async fn help_lists_the_commands_the_caller_may_use() {
    let (_dir, room) = fresh().await;
    let bob = room.join("Bob", "h").await.unwrap();
    let text = reply(&room, &bob, "/help").await;
    assert_words(&text, &["/auth"]);
    assert!(!text.contains("/admin kick"), "{text}");

    let ann = admin(&room).await;
    let text = reply(&room, &ann, "/HELP").await;
    assert_words(&text, &["/auth", "/admin kick", "/admin ban"]);
}

/// Commands reach no one else; a lone "/" or "/ text" is an ordinary
/// message.
#[tokio::test]
async fn commands_are_never_broadcast() {
    let (_dir, room) = fresh().await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    for line in ["/help", "/nope", "/auth wrong", "  /admin bans"] {
        room.chat_message(ann.session, line).await.unwrap();
    }
    assert_eq!(events(&room, bob.session), vec![]);

    room.chat_message(ann.session, "/").await.unwrap();
    room.chat_message(ann.session, "/ shrug").await.unwrap();
    let msgs: Vec<EventKind> = ["/", "/ shrug"]
        .iter()
        .map(|msg| EventKind::ChatMsg {
            nick: "Ann".into(),
            msg: msg.to_string(),
        })
        .collect();
    assert_eq!(events(&room, bob.session), msgs);
}

/// An unknown command is refused with "invalid command".
#[tokio::test]
async fn an_unknown_command_is_invalid() {
    let (_dir, room) = fresh().await;
    let ann = room.join("Ann", "h").await.unwrap();
    for line in ["/frobnicate", "/he!p now"] {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["invalid command"]);
    }
}

/// /admin from someone who is not an administrator is an invalid command
/// and does nothing.
#[tokio::test]
async fn admin_commands_from_a_non_administrator_are_invalid() {
    let (_dir, room) = fresh().await;
    let ann = room.join("Ann", "h1").await.unwrap();
    let bob = room.join("Bob", "h2").await.unwrap();
    for line in ["/admin help", "/admin kick Bob x", "/admin ban Bob x 60"] {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["invalid command"]);
    }
    assert!(room.is_active(bob.session));
    assert!(room.bans().unwrap().is_empty());
}

/// The right password makes the caller an administrator, tells them
/// "authenticated" and tells everyone admin_logged_in.
#[tokio::test]
async fn auth_with_the_right_password_makes_an_administrator() {
    let (_dir, room) = fresh().await;
    let bob = room.join("Bob", "h").await.unwrap();
    let ann = admin(&room).await;
    let logged_in = EventKind::AdminLoggedIn { nick: "Ann".into() };
    assert_eq!(
        events(&room, bob.session),
        vec![
            EventKind::UserJoinedRoom { nick: "Ann".into() },
            logged_in.clone()
        ]
    );
    assert!(events(&room, ann.session).contains(&logged_in));
    let text = reply(&room, &ann, "/admin help").await;
    assert_words(&text, &["kick"]);
}

/// A wrong password gets a reply with "password" and nothing else.
#[tokio::test]
async fn auth_with_a_wrong_password_changes_nothing() {
    let (_dir, room) = fresh().await;
    let bob = room.join("Bob", "h").await.unwrap();
    let ann = room.join("Ann", "h").await.unwrap();
    let text = reply(&room, &ann, "/auth guess").await;
    assert_words(&text, &["password"]);
    assert_eq!(events(&room, bob.session).len(), 1, "only Ann's join");
    let text = reply(&room, &ann, "/admin help").await;
    assert_words(&text, &["invalid command"]);
}

/// /auth without exactly one argument shows its form.
#[tokio::test]
async fn auth_without_a_password_shows_the_form() {
    let (_dir, room) = fresh().await;
    let ann = room.join("Ann", "h").await.unwrap();
    for line in ["/auth", "/auth two words"] {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["/auth PASSWORD"]);
    }
}

/// Without a configured digest nobody can become an administrator, not
/// even with an empty password.
#[tokio::test]
async fn without_a_configured_password_nobody_authenticates() {
    let (_dir, room) = common::fresh_room().await;
    let ann = room.join("Ann", "h").await.unwrap();
    for line in [&format!("/auth \"{PASSWORD}\""), "/auth \"\""] {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["password"]);
    }
    let text = reply(&room, &ann, "/admin help").await;
    assert_words(&text, &["invalid command"]);
}

/// After three wrong passwords a session is refused even the right one;
/// after ten from one host, every session of that host is, while other
/// hosts are not.
#[tokio::test]
async fn wrong_passwords_are_throttled_per_session_and_per_host() {
    let (_dir, room) = fresh().await;
    let right = format!("/auth \"{PASSWORD}\"");
    let mallory = room.join("Mallory", "office").await.unwrap();
    for _ in 0..3 {
        assert_words(&reply(&room, &mallory, "/auth guess").await, &["wrong"]);
    }
    let text = reply(&room, &mallory, &right).await;
    assert_words(&text, &["too many", "try again"]);
    assert!(!text.to_lowercase().contains("authenticated"));

    // Three more sessions of the same host: the tenth failure locks it.
    for n in 0..3 {
        let other = room.join(&format!("M{n}"), "office").await.unwrap();
        for _ in 0..3 {
            reply(&room, &other, "/auth guess").await;
        }
    }
    let fresh_one = room.join("Newcomer", "office").await.unwrap();
    let text = reply(&room, &fresh_one, &right).await;
    assert_words(&text, &["too many", "try again"]);

    let elsewhere = room.join("Elsewhere", "home").await.unwrap();
    assert_words(&reply(&room, &elsewhere, &right).await, &["authenticated"]);
}

/// /admin help names every subcommand.
#[tokio::test]
async fn admin_help_names_every_subcommand() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let text = reply(&room, &ann, "/admin help").await;
    assert_words(&text, &["kick", "ban", "unban", "bans", "info", "logout"]);
}

/// An unknown subcommand, or wrong arguments, answer "unknown admin
/// command" with the right form.
#[tokio::test]
async fn admin_mistakes_answer_with_the_right_form() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let cases = [
        ("/admin", "/admin kick USER REASON"),
        ("/admin dance", "/admin unban HOST"),
        ("/admin kick Bob", "/admin kick USER REASON"),
        ("/admin ban Bob spam", "/admin ban USER REASON SECONDS"),
        ("/admin info", "/admin info USER"),
        ("/admin unban", "/admin unban HOST"),
        ("/admin bans now", "/admin bans"),
        ("/admin kick Bob \"open quote", "/admin kick USER REASON"),
    ];
    for (line, form) in cases {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["unknown admin command", form]);
    }
}

/// info shows nick, host and last action; someone not here is an unknown
/// user.
#[tokio::test]
async fn info_shows_a_user_and_refuses_someone_not_here() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    room.join("Bob", "10.1.2.3").await.unwrap();
    let text = reply(&room, &ann, "/admin info bob").await;
    assert_words(&text, &["Bob", "10.1.2.3", "last action", "ago"]);
    let text = reply(&room, &ann, "/admin info Zed").await;
    assert_words(&text, &["unknown user", "not found"]);
}

/// A kicked user leaves with "kicked: REASON"; their next wait, with no
/// poll parked at the time, returns the notice, then bad_session, and
/// their token is dead.
#[tokio::test]
async fn kick_ends_the_user_and_tells_them_why() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let bob = room.join("Bob", "h").await.unwrap();
    let ann_from = room.current_id(ann.session).unwrap();
    let text = reply(&room, &ann, "/admin kick Bob \"too loud\"").await;
    assert_words(&text, &["kicked", "Bob"]);

    let ann_events = events(&room, ann.session);
    assert!(ann_events[ann_from as usize..].contains(
        &EventKind::UserLeftRoom {
            nick: "Bob".into(),
            reason: "kicked: too loud".into()
        }
    ));
    assert!(!room.is_active(bob.session));
    assert!(matches!(
        room.chat_message(bob.session, "still here?").await,
        Err(Error::BadSession)
    ));

    let answer = room.wait(bob.session, 0).await.unwrap();
    let WaitAnswer::Events(delivery) = answer else {
        panic!("expected the notice, got {answer:?}");
    };
    let last = &delivery.events.last().unwrap().1.kind;
    let EventKind::SystemMsg { text } = last else {
        panic!("{last:?}");
    };
    assert_words(text, &["kicked", "too loud"]);
    assert_eq!(
        room.wait(bob.session, 0).await.unwrap(),
        WaitAnswer::BadSession
    );
    assert!(room.session_for_token(&bob.token).is_none());
    // The nick is free again.
    room.join("Bob", "h").await.unwrap();
}

/// A poll parked when the kick happens wakes with the notice.
#[tokio::test]
async fn kick_wakes_a_parked_poll_with_the_notice() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let bob = room.join("Bob", "h").await.unwrap();
    let from = room.current_id(bob.session).unwrap();
    let parked = {
        let room = room.clone();
        tokio::spawn(async move { room.wait(bob.session, from).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    room.chat_message(ann.session, "/admin kick Bob bye")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), parked)
        .await
        .expect("the parked poll woke")
        .unwrap()
        .unwrap();
    let WaitAnswer::Events(delivery) = answer else {
        panic!("{answer:?}");
    };
    assert!(matches!(
        &delivery.events[0].1.kind,
        EventKind::SystemMsg { text } if text.contains("kicked")
    ));
}

/// Kicking someone not here, or yourself, is refused and changes nothing.
#[tokio::test]
async fn kick_refuses_unknown_users_and_yourself() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let text = reply(&room, &ann, "/admin kick Zed spam").await;
    assert_words(&text, &["unknown user", "not found"]);
    let text = reply(&room, &ann, "/admin kick ann oops").await;
    assert_words(&text, &["yourself"]);
    assert!(room.is_active(ann.session));
}

/// A ban ends the user (reason "banned: REASON") and every other live
/// session of their host, refuses logins from that host with the time
/// remaining, and leaves other hosts alone.
#[tokio::test]
async fn ban_ends_the_host_and_refuses_its_logins() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let bob = room.join("Bob", "10.0.0.7").await.unwrap();
    let bobs_friend = room.join("Carl", "10.0.0.7").await.unwrap();
    let dora = room.join("Dora", "10.0.0.8").await.unwrap();
    let text = reply(&room, &ann, "/admin ban Bob spam 3600").await;
    assert_words(&text, &["banned", "10.0.0.7"]);

    assert!(!room.is_active(bob.session));
    assert!(!room.is_active(bobs_friend.session));
    assert!(room.is_active(dora.session));
    assert!(
        events(&room, dora.session).contains(&EventKind::UserLeftRoom {
            nick: "Bob".into(),
            reason: "banned: spam".into()
        })
    );
    for session in [bob.session, bobs_friend.session] {
        let told = notices(&room, session);
        assert_words(told.last().unwrap(), &["banned", "spam"]);
    }

    match room.join("Bobby", "10.0.0.7").await {
        Err(Error::Banned { remaining_secs }) => {
            assert!((3590..=3600).contains(&remaining_secs), "{remaining_secs}")
        }
        other => panic!("expected a ban, got {other:?}"),
    }
    room.join("Eve", "10.0.0.9").await.unwrap();
}

/// Banning yourself, or someone at your own address, is refused.
#[tokio::test]
async fn ban_refuses_yourself() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let twin = room.join("Twin", "admin-host").await.unwrap();
    for line in ["/admin ban Ann oops 60", "/admin ban Twin oops 60"] {
        let text = reply(&room, &ann, line).await;
        assert_words(&text, &["yourself"]);
    }
    assert!(room.is_active(twin.session));
    assert!(room.bans().unwrap().is_empty());
}

/// A ban with a bad number of seconds is an invalid time; of someone not
/// here, an unknown user. Neither stores a ban.
#[tokio::test]
async fn ban_refuses_bad_times_and_unknown_users() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    let bob = room.join("Bob", "h").await.unwrap();
    for seconds in ["0", "-1", "ten", "1.5", "99999999999999999999"] {
        let line = format!("/admin ban Bob spam {seconds}");
        assert_words(&reply(&room, &ann, &line).await, &["invalid time"]);
    }
    let text = reply(&room, &ann, "/admin ban Zed spam 60").await;
    assert_words(&text, &["unknown user", "not found"]);
    assert!(room.is_active(bob.session));
    assert!(room.bans().unwrap().is_empty());
}

/// /admin bans lists host, last nick, reason and time remaining.
#[tokio::test]
async fn bans_lists_every_ban() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    assert_words(&reply(&room, &ann, "/admin bans").await, &["no bans"]);
    room.join("Bob", "10.0.0.7").await.unwrap();
    room.join("Carl", "10.0.0.8").await.unwrap();
    reply(&room, &ann, "/admin ban Bob \"<b>spam</b>\" 7250").await;
    reply(&room, &ann, "/admin ban Carl flood 90").await;
    let text = reply(&room, &ann, "/admin bans").await;
    assert_words(
        &text,
        &[
            "10.0.0.7",
            "Bob",
            "<b>spam</b>",
            "2 h",
            "10.0.0.8",
            "Carl",
            "flood",
            "1 min",
        ],
    );
}

/// unban takes a plain address, says "removed ban", and the host may log
/// in again; unbanning a host without a ban says it was not found.
#[tokio::test]
async fn unban_lifts_a_ban() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    room.join("Bob", "127.0.0.1").await.unwrap();
    reply(&room, &ann, "/admin ban Bob spam 600").await;
    assert!(room.join("Bob", "127.0.0.1").await.is_err());

    let text = reply(&room, &ann, "/admin unban 127.0.0.1").await;
    assert_words(&text, &["removed ban"]);
    room.join("Bob", "127.0.0.1").await.unwrap();
    let text = reply(&room, &ann, "/admin unban 127.0.0.1").await;
    assert_words(&text, &["not found"]);
    assert!(room.bans().unwrap().is_empty());
}

/// logout gives up admin rights and tells everyone admin_logged_out.
#[tokio::test]
async fn logout_gives_up_admin_rights() {
    let (_dir, room) = fresh().await;
    let bob = room.join("Bob", "h").await.unwrap();
    let ann = admin(&room).await;
    room.chat_message(ann.session, "/admin logout")
        .await
        .unwrap();
    let logged_out = EventKind::AdminLoggedOut { nick: "Ann".into() };
    assert!(events(&room, bob.session).contains(&logged_out));
    assert!(events(&room, ann.session).contains(&logged_out));
    let text = reply(&room, &ann, "/admin help").await;
    assert_words(&text, &["invalid command"]);
}

/// A ban, and the admin flag, survive a restart.
#[tokio::test]
async fn a_ban_and_the_admin_flag_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let settings = settings(dir.path());
    let ann = {
        let room = room_with(&settings).await;
        let ann = admin(&room).await;
        room.join("Bob", "10.0.0.7").await.unwrap();
        reply(&room, &ann, "/admin ban Bob spam 600").await;
        ann
    };
    let room = room_with(&settings).await;
    assert!(matches!(
        room.join("Bob", "10.0.0.7").await,
        Err(Error::Banned { .. })
    ));
    let text = reply(&room, &ann, "/admin bans").await;
    assert_words(&text, &["10.0.0.7", "Bob", "spam"]);
}

/// An expired ban no longer refuses the host, is not listed, and the
/// idle sweep removes it from the store.
#[tokio::test]
async fn an_expired_ban_is_ignored_and_removed() {
    let (_dir, room) = fresh().await;
    let ann = admin(&room).await;
    room.join("Bob", "10.0.0.7").await.unwrap();
    room.join("Carl", "10.0.0.8").await.unwrap();
    reply(&room, &ann, "/admin ban Bob spam 1").await;
    reply(&room, &ann, "/admin ban Carl spam 1").await;
    assert!(room.join("Bob", "10.0.0.7").await.is_err());
    assert_eq!(room.store().bans().unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    room.join("Bob", "10.0.0.7").await.unwrap();
    // Bob's ban went when it was met; Carl's waits for the sweep.
    let stored = room.store().bans().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "10.0.0.8");
    room.sweep_idle().await.unwrap();
    assert!(room.store().bans().unwrap().is_empty());
    assert_words(&reply(&room, &ann, "/admin bans").await, &["no bans"]);
}

/// Over the rate limit a message is not delivered and the sender is told
/// "too fast"; commands are not counted; after the window it recovers.
#[tokio::test]
async fn the_rate_limit_trips_and_recovers() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.rate_limit_messages = 3;
    settings.rate_limit_window = 1;
    let room = room_with(&settings).await;
    let ann = room.join("Ann", "h").await.unwrap();
    let bob = room.join("Bob", "h").await.unwrap();
    for n in 0..3 {
        room.chat_message(ann.session, &format!("m{n}"))
            .await
            .unwrap();
    }
    let before = notices(&room, ann.session).len();
    let refused = room.chat_message(ann.session, "m3").await;
    assert!(matches!(refused, Err(Error::TooFast)), "{refused:?}");
    let told = notices(&room, ann.session);
    assert_eq!(told.len(), before + 1, "one notice for the refused line");
    assert_words(told.last().unwrap(), &["too fast"]);
    assert_words(&reply(&room, &ann, "/help").await, &["/auth"]);
    let delivered = |room: &Room| {
        events(room, bob.session)
            .into_iter()
            .filter(|k| matches!(k, EventKind::ChatMsg { .. }))
            .count()
    };
    assert_eq!(delivered(&room), 3);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    room.chat_message(ann.session, "again").await.unwrap();
    assert_eq!(delivered(&room), 4);
}

/// A rate limit of 0 lets everything through.
#[tokio::test]
async fn a_rate_limit_of_zero_is_off() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.rate_limit_messages = 0;
    let room = room_with(&settings).await;
    let ann = room.join("Ann", "h").await.unwrap();
    for n in 0..30 {
        room.chat_message(ann.session, &format!("m{n}"))
            .await
            .unwrap();
    }
    assert!(notices(&room, ann.session).is_empty());
    assert_eq!(events(&room, ann.session).len(), 30);
}

/// Joins `nick` from `host`, expecting success.
async fn join(room: &Room, nick: &str, host: &str) -> Joined {
    room.join(nick, host)
        .await
        .unwrap_or_else(|e| panic!("{nick} from {host}: {e}"))
}

fn assert_full(result: Result<Joined, Error>) {
    assert!(
        matches!(result, Err(Error::TooManyConnections(3))),
        "{result:?}"
    );
}

/// The cap refuses the N+1th session of a host and every exit path
/// (leave, kick, idle sweep, ban) gives the slot back, round after round.
#[tokio::test]
async fn the_host_cap_gives_slots_back_on_every_exit_path() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.max_sessions_per_host = 3;
    settings.max_idle = 1;
    let room = room_with(&settings).await;
    let ann = admin(&room).await;
    let host = "10.9.9.9";
    for round in 0..3 {
        let nick = |n: u32| format!("r{round}n{n}");
        let first = join(&room, &nick(1), host).await;
        let second = join(&room, &nick(2), host).await;
        let third = join(&room, &nick(3), host).await;
        assert_full(room.join(&nick(4), host).await);
        join(&room, &nick(5), "elsewhere").await;

        room.leave(first.session, "normal").await.unwrap();
        let fourth = join(&room, &nick(4), host).await;
        assert_full(room.join(&nick(6), host).await);

        reply(&room, &ann, &format!("/admin kick {} bye", nick(2))).await;
        assert!(!room.is_active(second.session));
        let sixth = join(&room, &nick(6), host).await;
        assert_full(room.join(&nick(7), host).await);

        // Everyone but the third session stays busy through the sweep.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for busy in [&ann, &fourth, &sixth] {
            room.users(busy.session).unwrap();
        }
        room.sweep_idle().await.unwrap();
        assert!(!room.is_active(third.session));
        join(&room, &nick(7), host).await;
        assert_full(room.join(&nick(8), host).await);

        reply(&room, &ann, &format!("/admin ban {} bye 600", nick(4))).await;
        assert_eq!(room.host_sessions(host), 0);
        assert_words(
            &reply(&room, &ann, &format!("/admin unban {host}")).await,
            &["removed ban"],
        );
    }
    // Three fresh sessions fit again after the last round.
    for n in 0..3 {
        join(&room, &format!("last{n}"), host).await;
    }
}

/// The count of a host's sessions is rebuilt at start-up: a full host
/// stays full after a restart, a kicked session (whose notice is still
/// unread) does not count, and a leave after the restart frees a slot.
#[tokio::test]
async fn the_host_cap_holds_across_a_restart() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.max_sessions_per_host = 3;
    let host = "10.9.9.9";
    let (keep, kicked) = {
        let room = room_with(&settings).await;
        let ann = admin(&room).await;
        let keep = join(&room, "Keep", host).await;
        join(&room, "Two", host).await;
        let kicked = join(&room, "Three", host).await;
        assert_full(room.join("Four", host).await);
        reply(&room, &ann, "/admin kick Three bye").await;
        (keep, kicked)
    };
    let room = room_with(&settings).await;
    assert_eq!(room.host_sessions(host), 2);
    assert!(
        room.session_for_token(&kicked.token).is_some(),
        "marker kept"
    );
    join(&room, "Four", host).await;
    assert_full(room.join("Five", host).await);
    room.leave(keep.session, "normal").await.unwrap();
    join(&room, "Five", host).await;
}

/// A cap of 0 is off.
#[tokio::test]
async fn a_host_cap_of_zero_is_off() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.max_sessions_per_host = 0;
    let room = room_with(&settings).await;
    for n in 0..20 {
        join(&room, &format!("u{n}"), "h").await;
    }
}

/// A malformed admin digest is refused at start-up, and printing the
/// settings never shows the digest.
#[tokio::test]
async fn a_malformed_admin_digest_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut settings = settings(dir.path());
    settings.admin_password_sha256 = Some(String::from("not a digest").into());
    assert!(matches!(Room::open(&settings), Err(Error::Config(_))));
    settings.admin_password_sha256 = Some(digest_hex().into());
    assert!(!format!("{settings:?}").contains(&digest_hex()));
}

// ---- HTTP ---------------------------------------------------------------

/// A test server with the admin password and `extra` settings.
async fn server(extra: &[(&str, Value)]) -> (TempDir, Client) {
    let dir = TempDir::new().unwrap();
    let client = http_client(dir.path(), extra).await;
    (dir, client)
}

async fn http_client(dir: &Path, extra: &[(&str, Value)]) -> Client {
    let mut all = vec![("admin_password_sha256", json!(digest_hex()))];
    all.extend(extra.iter().cloned());
    common::client(dir, &all).await
}

/// Posts the login form from `ip`, with extra headers.
async fn login_from<'c>(
    client: &'c Client,
    nick: &str,
    ip: &str,
    headers: &[(&'static str, &'static str)],
) -> LocalResponse<'c> {
    let mut req = client
        .post("/login/")
        .header(ContentType::Form)
        .remote(format!("{ip}:40000").parse().unwrap())
        .body(format!("nick={nick}"));
    for (name, value) in headers {
        req = req.header(Header::new(*name, *value));
    }
    req.dispatch().await
}

/// Logs in from `ip` and returns the token.
async fn token_from(client: &Client, nick: &str, ip: &str) -> String {
    let res = login_from(client, nick, ip, &[]).await;
    assert_eq!(res.status(), Status::SeeOther, "login of {nick}");
    res.cookies().get("chat_sess").unwrap().value().to_string()
}

/// The body of a refused login.
async fn refused(res: LocalResponse<'_>) -> (Status, String) {
    assert!(res.cookies().get("chat_sess").is_none());
    (res.status(), res.into_string().await.unwrap())
}

/// Sends a chat line through the API.
async fn send(client: &Client, token: &str, line: &str) -> Value {
    let body = format!("msg={}", common::urlencode(line));
    common::post_form(client, "/chat/send_msg/", token, body)
        .await
        .1
}

/// The texts of the system messages in a session's mailbox so far.
async fn http_notices(client: &Client, token: &str) -> Vec<String> {
    let (_, json) =
        common::get_json(client, "/chat/wait/?msg_id=0", token).await;
    json["response"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["t"] == "system_msg")
                .map(|e| e["d"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn online(client: &Client, token: &str) -> Value {
    common::get_json(client, "/chat/online/", token).await.1["response"].clone()
}

/// Logs Ann in from 10.0.0.1 and makes her an administrator over HTTP.
async fn http_admin(client: &Client) -> String {
    let ann = token_from(client, "Ann", "10.0.0.1").await;
    send(client, &ann, &format!("/auth \"{PASSWORD}\"")).await;
    let told = http_notices(client, &ann).await;
    assert_words(told.last().unwrap(), &["authenticated"]);
    ann
}

/// The refused logins say "banned" with the time remaining, and "too
/// many connections".
#[rocket::async_test]
async fn refused_logins_say_banned_or_too_many_connections() {
    let (_dir, client) = server(&[("max_sessions_per_host", json!(1))]).await;
    let ann = http_admin(&client).await;
    token_from(&client, "Bob", "10.0.0.2").await;
    let (status, body) =
        refused(login_from(&client, "Bo", "10.0.0.2", &[]).await).await;
    assert_eq!(status, Status::TooManyRequests);
    assert_words(&body, &["too many connections"]);

    send(&client, &ann, "/admin ban Bob spam 120").await;
    let (status, body) =
        refused(login_from(&client, "Bo", "10.0.0.2", &[]).await).await;
    assert_eq!(status, Status::Forbidden);
    assert_words(&body, &["banned", "min"]);
}

/// A send over the rate limit is not answered "ok" (which means "on
/// disk"): it answers HTTP 429 `too_fast`, beside the notice.
#[rocket::async_test]
async fn a_send_over_the_rate_limit_answers_too_fast() {
    let (_dir, client) = server(&[("rate_limit_messages", json!(2))]).await;
    let ann = token_from(&client, "Ann", "10.0.0.1").await;
    for n in 0..2 {
        assert_eq!(send(&client, &ann, &format!("m{n}")).await["status"], "ok");
    }
    let body = format!("msg={}", common::urlencode("m2"));
    let (status, json) =
        common::post_form(&client, "/chat/send_msg/", &ann, body).await;
    assert_eq!(status, Status::TooManyRequests);
    assert_eq!(json, json!({"status": "error", "response": "too_fast"}));
    assert_words(http_notices(&client, &ann).await.last().unwrap(), &["fast"]);
}

/// A browser whose address is at the cap can still log in again: the
/// session its cookie names gives its slot to the new one and leaves.
#[rocket::async_test]
async fn logging_in_again_from_a_full_address_replaces_the_old_session() {
    let (_dir, client) = server(&[("max_sessions_per_host", json!(1))]).await;
    let bob = token_from(&client, "Bob", "10.0.0.2").await;
    let again = client
        .post("/login/")
        .header(ContentType::Form)
        .cookie(Cookie::new("chat_sess", bob.clone()))
        .remote("10.0.0.2:40000".parse().unwrap())
        .body("nick=Bobby")
        .dispatch()
        .await;
    assert_eq!(again.status(), Status::SeeOther);
    let bobby = again
        .cookies()
        .get("chat_sess")
        .unwrap()
        .value()
        .to_string();
    let (_, json) = common::get_json(&client, "/chat/start/", &bob).await;
    assert_eq!(json["response"], "bad_session");
    assert_eq!(online(&client, &bobby).await, json!(["Bobby"]));

    // The address is still at its cap for anyone without that cookie.
    let (status, body) =
        refused(login_from(&client, "Carl", "10.0.0.2", &[]).await).await;
    assert_eq!(status, Status::TooManyRequests);
    assert_words(&body, &["too many connections"]);
}

/// By default X-Real-IP and X-Forwarded-For change nothing: the cap and
/// the ban see the TCP peer.
#[rocket::async_test]
async fn spoofed_address_headers_change_nothing() {
    let (_dir, client) = server(&[("max_sessions_per_host", json!(1))]).await;
    let ann = http_admin(&client).await;
    token_from(&client, "Bob", "10.0.0.2").await;
    let spoof = [("X-Real-IP", "10.0.0.99"), ("X-Forwarded-For", "10.0.0.98")];
    let (_, body) =
        refused(login_from(&client, "Carl", "10.0.0.2", &spoof).await).await;
    assert_words(&body, &["too many connections"]);

    send(&client, &ann, "/admin info Bob").await;
    assert_words(
        http_notices(&client, &ann).await.last().unwrap(),
        &["10.0.0.2"],
    );
    send(&client, &ann, "/admin ban Bob spam 120").await;
    let (_, body) =
        refused(login_from(&client, "Carl", "10.0.0.2", &spoof).await).await;
    assert_words(&body, &["banned"]);
}

/// A cross-site post is refused with 403 and changes nothing, even a
/// page that auto-submits `/admin ban` with an administrator's cookie.
#[rocket::async_test]
async fn cross_site_posts_are_refused_and_change_nothing() {
    let (_dir, client) = server(&[]).await;
    let ann = http_admin(&client).await;
    let bob = token_from(&client, "Bob", "10.0.0.2").await;
    let ann_start = common::get_json(&client, "/chat/start/", &ann).await.1;
    let bob_start = common::get_json(&client, "/chat/start/", &bob).await.1;
    let foreign = [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ];
    for (name, value) in foreign {
        for path in ["/chat/send_msg/", "/chat/leave/"] {
            let res = client
                .post(path)
                .header(ContentType::Form)
                .header(Header::new("Host", "chat.test"))
                .header(Header::new(name, value))
                .cookie(Cookie::new("chat_sess", ann.clone()))
                .body("msg=%2Fadmin%20ban%20Bob%20spam%20600")
                .dispatch()
                .await;
            assert_eq!(res.status(), Status::Forbidden, "{path} {name}");
            let body: Value =
                serde_json::from_str(&res.into_string().await.unwrap())
                    .unwrap();
            assert_eq!(body["status"], "error");
        }
        let res = client
            .get("/chat/leave/")
            .header(Header::new(name, value))
            .cookie(Cookie::new("chat_sess", ann.clone()))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Forbidden);
        let res = client
            .post("/login/")
            .header(ContentType::Form)
            .header(Header::new(name, value))
            .remote("10.0.0.5:1".parse().unwrap())
            .body("nick=Mallory")
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Forbidden);
        assert!(res.cookies().get("chat_sess").is_none());
    }
    assert_eq!(online(&client, &ann).await, json!(["Ann", "Bob"]));
    assert_eq!(
        common::get_json(&client, "/chat/start/", &ann).await.1,
        ann_start
    );
    assert_eq!(
        common::get_json(&client, "/chat/start/", &bob).await.1,
        bob_start
    );
    send(&client, &ann, "/admin bans").await;
    assert_words(
        http_notices(&client, &ann).await.last().unwrap(),
        &["no bans"],
    );
}

/// Same-origin requests pass: an Origin matching the Host, Sec-Fetch-Site
/// same-origin or none, and requests with neither header.
#[rocket::async_test]
async fn same_origin_requests_pass() {
    let (_dir, client) = server(&[]).await;
    let ann = token_from(&client, "Ann", "10.0.0.1").await;
    let own = [
        ("Origin", "http://chat.test:8000"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Site", "none"),
    ];
    for (n, (name, value)) in own.into_iter().enumerate() {
        let res = client
            .post("/chat/send_msg/")
            .header(ContentType::Form)
            .header(Header::new("Host", "chat.test:8000"))
            .header(Header::new(name, value))
            .cookie(Cookie::new("chat_sess", ann.clone()))
            .body(format!("msg=hello{n}"))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Ok, "{name}: {value}");
    }
    let (_, json) =
        common::get_json(&client, "/chat/wait/?msg_id=0", &ann).await;
    assert_eq!(json["response"].as_array().unwrap().len(), 3);
}

/// With public_origin set, only that origin passes, whatever the Host.
#[rocket::async_test]
async fn public_origin_is_the_only_accepted_origin() {
    let origin = json!("https://chat.example.org");
    let (_dir, client) = server(&[("public_origin", origin)]).await;
    let ann = token_from(&client, "Ann", "10.0.0.1").await;
    let cases = [
        ("https://chat.example.org", Status::Ok),
        ("https://CHAT.example.org:443", Status::Ok),
        ("http://internal:8000", Status::Forbidden),
    ];
    for (origin, expected) in cases {
        let res = client
            .post("/chat/send_msg/")
            .header(ContentType::Form)
            .header(Header::new("Host", "internal:8000"))
            .header(Header::new("Origin", origin))
            .cookie(Cookie::new("chat_sess", ann.clone()))
            .body("msg=hi")
            .dispatch()
            .await;
        assert_eq!(res.status(), expected, "{origin}");
    }
}

/// secure_cookies marks the session cookie Secure; by default it is not
/// (the local client serves no TLS).
#[rocket::async_test]
async fn secure_cookies_marks_the_cookie_secure() {
    for (setting, secure) in [(json!(true), true), (json!(false), false)] {
        let (_dir, client) = server(&[("secure_cookies", setting)]).await;
        let res = login_from(&client, "Ann", "10.0.0.1", &[]).await;
        let set_cookie =
            res.headers().get_one("Set-Cookie").unwrap().to_string();
        assert_eq!(set_cookie.contains("Secure"), secure, "{set_cookie}");
        for attribute in ["HttpOnly", "SameSite=Strict"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
    }
}

/// A planted cookie does not survive login: a fresh token is issued, the
/// planted value stays unknown, and a live session planted by someone
/// else is ended.
#[rocket::async_test]
async fn a_planted_cookie_does_not_survive_login() {
    let (_dir, client) = server(&[]).await;
    let planted = "a".repeat(64);
    let attacker = token_from(&client, "Mallory", "10.0.0.6").await;
    let cases = [
        (planted.clone(), json!(["Mallory", "Victim"])),
        (attacker.clone(), json!(["Victim"])),
    ];
    for (plant, expected_online) in cases {
        let res = client
            .post("/login/")
            .header(ContentType::Form)
            .cookie(Cookie::new("chat_sess", plant.clone()))
            .remote("10.0.0.1:1".parse().unwrap())
            .body("nick=Victim")
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::SeeOther);
        let token = res.cookies().get("chat_sess").unwrap().value().to_string();
        assert_ne!(token, plant);
        let (_, json) = common::get_json(&client, "/chat/start/", &plant).await;
        assert_eq!(json["response"], "bad_session");
        assert_eq!(online(&client, &token).await, expected_online);
        common::get_json(&client, "/chat/leave/", &token).await;
    }
}

/// Asserts that every API call with `token` answers bad_session (a wait
/// may first deliver the final notice) and that a send reaches nobody.
async fn assert_dead(client: &Client, token: &str, witness: &str) {
    let before = common::get_json(client, "/chat/start/", witness).await.1;
    let bad = json!({"status": "error", "response": "bad_session"});
    for path in ["/chat/start/", "/chat/online/"] {
        assert_eq!(
            common::get_json(client, path, token).await.1,
            bad,
            "{path}"
        );
    }
    assert_eq!(send(client, token, "ghost").await, bad);
    let (_, first) =
        common::get_json(client, "/chat/wait/?msg_id=0", token).await;
    if first != bad {
        let events = first["response"].as_array().expect("events");
        assert_eq!(events.last().unwrap()["t"], "system_msg", "{first}");
    }
    let (_, again) =
        common::get_json(client, "/chat/wait/?msg_id=0", token).await;
    assert_eq!(again, bad);
    let page = client
        .get("/chat/")
        .cookie(Cookie::new("chat_sess", token.to_string()))
        .dispatch()
        .await;
    assert_eq!(page.status(), Status::SeeOther);
    assert_eq!(
        common::get_json(client, "/chat/start/", witness).await.1,
        before
    );
}

/// A token ended by leave, kick, ban or the idle sweep stays dead, also
/// after a restart (before and after its final notice was read).
#[rocket::async_test]
async fn ended_tokens_stay_dead_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let extra = [("max_idle", json!(1))];
    let (ann, ended) = {
        let client = http_client(dir.path(), &extra).await;
        let swept = token_from(&client, "Swept", "10.0.0.9").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let room = client.rocket().state::<Arc<Room>>().unwrap().clone();
        assert_eq!(room.sweep_idle().await.unwrap(), 1);

        let ann = http_admin(&client).await;
        let left = token_from(&client, "Left", "10.0.0.2").await;
        let kicked = token_from(&client, "Kicked", "10.0.0.3").await;
        let banned = token_from(&client, "Banned", "10.0.0.4").await;
        common::get_json(&client, "/chat/leave/", &left).await;
        send(&client, &ann, "/admin kick Kicked bye").await;
        send(&client, &ann, "/admin ban Banned bye 600").await;
        client.terminate().await;
        (ann, [swept, left, kicked, banned])
    };
    for _ in 0..2 {
        let client = http_client(dir.path(), &extra).await;
        for token in &ended {
            assert_dead(&client, token, &ann).await;
        }
        client.terminate().await;
    }
}

/// A public_origin that is not an origin is refused at start-up.
#[rocket::async_test]
async fn a_malformed_public_origin_is_refused() {
    let dir = TempDir::new().unwrap();
    for bad in ["chat.example.org", "https://", "null"] {
        let figment =
            common::figment(dir.path(), &[("public_origin", json!(bad))]);
        assert!(
            matches!(natter::rocket(figment), Err(Error::Config(_))),
            "{bad}"
        );
    }
}

/// The real binary logs neither the admin password nor its digest (nor a
/// wrong guess), while it does log its settings and the refusal.
#[test]
fn the_admin_password_and_its_digest_are_never_logged() {
    let (_keep, dir) = process::data_dir();
    let digest = digest_hex();
    let env = [("ROCKET_ADMIN_PASSWORD_SHA256", digest.as_str())];
    let server = process::start(&dir, &env);
    let ann = Session::login(&server, "Ann");
    ann.say("/auth wrong-guess");
    ann.say(&format!("/auth \"{PASSWORD}\""));
    let events = ann.wait(0);
    let texts = events["response"].to_string();
    assert_words(&texts, &["wrong password", "authenticated"]);

    // What it printed: at start-up, and since (give the pipe a moment).
    std::thread::sleep(Duration::from_millis(300));
    let mut lines = server.startup.clone();
    lines.extend(server.log.try_iter());
    server.terminate();
    assert!(lines.iter().any(|l| l.contains("natter settings")));
    assert!(lines.iter().any(|l| l.contains("wrong admin password")));
    for line in &lines {
        for secret in [digest.as_str(), PASSWORD, "wrong-guess"] {
            assert!(!line.contains(secret), "{secret:?} logged: {line}");
        }
    }
}
