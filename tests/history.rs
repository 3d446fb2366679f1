//! The room's scrollback, `GET /chat/history/`, through Rocket's local
//! client: what it keeps, in what order, its limit, and that it survives a
//! restart.

mod common;

use rocket::local::asynchronous::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The history a session sees; fails unless the envelope is ok.
async fn history(client: &Client, token: &str) -> Vec<Value> {
    let (status, json) =
        common::get_json(client, "/chat/history/", token).await;
    assert_eq!(status.code, 200);
    assert_eq!(json["status"], "ok", "{json}");
    json["response"].as_array().expect("a list").clone()
}

/// The texts of history lines, in the order given.
fn texts(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["d"]["msg"].as_str().unwrap())
        .collect()
}

/// Someone who joins later sees what was said before, oldest first, as
/// chat_msg events of the usual shape with ids that grow.
#[rocket::async_test]
async fn a_newcomer_sees_the_recent_conversation_oldest_first() {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    let ann = common::login(&client, "Ann").await;
    let bob = common::login(&client, "Bob").await;
    common::say(&client, &ann, "first").await;
    common::say(&client, &bob, "second").await;
    common::say(&client, &ann, "<b>third</b>").await;

    let cy = common::login(&client, "Cy").await;
    let lines = history(&client, &cy).await;
    assert_eq!(texts(&lines), ["first", "second", "<b>third</b>"]);
    let nicks: Vec<_> = lines.iter().map(|l| l["d"]["nick"].clone()).collect();
    assert_eq!(nicks, [json!("Ann"), json!("Bob"), json!("Ann")]);
    for line in &lines {
        assert_eq!(line["t"], "chat_msg");
        assert!(line["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(line.as_object().unwrap().len(), 4, "{line}");
    }
    let ids: Vec<u64> =
        lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2]);

    // The sender's own lines are there too, for a reload.
    assert_eq!(history(&client, &ann).await, lines);
}

/// A history line carries the same time stamp as the chat_msg the
/// mailbox delivered, so a client can tell the two are one message.
#[rocket::async_test]
async fn a_history_line_matches_the_delivered_message() {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    let ann = common::login(&client, "Ann").await;
    let bob = common::login(&client, "Bob").await;
    let (_, start) = common::get_json(&client, "/chat/start/", &bob).await;
    common::say(&client, &ann, "hello").await;
    let path = format!("/chat/wait/?msg_id={}", start["response"]);
    let (_, waited) = common::get_json(&client, &path, &bob).await;
    let delivered = &waited["response"][0];
    let line = &history(&client, &bob).await[0];
    assert_eq!(line["d"], delivered["d"]);
    assert_eq!(line["ts"], delivered["ts"]);
}

/// Only chat lines are kept: joins, leaves and empty messages are not,
/// and a long message is kept cut like the one delivered.
#[rocket::async_test]
async fn only_chat_lines_are_kept_and_long_ones_cut() {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    let ann = common::login(&client, "Ann").await;
    let bob = common::login(&client, "Bob").await;
    common::say(&client, &ann, "   ").await;
    common::say(&client, &ann, &"é".repeat(300)).await;
    let (_, left) = common::get_json(&client, "/chat/leave/", &bob).await;
    assert_eq!(left["status"], "ok");

    let lines = history(&client, &ann).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(texts(&lines)[0].chars().count(), 256);
}

/// The room keeps only its last `history_on_join` lines; the ids keep
/// counting past the dropped ones.
#[rocket::async_test]
async fn history_keeps_only_the_configured_number_of_lines() {
    let dir = TempDir::new().unwrap();
    let client =
        common::client(dir.path(), &[("history_on_join", json!(3))]).await;
    let ann = common::login(&client, "Ann").await;
    for n in 1..=5 {
        common::say(&client, &ann, &format!("line {n}")).await;
    }
    let lines = history(&client, &ann).await;
    assert_eq!(texts(&lines), ["line 3", "line 4", "line 5"]);
    assert_eq!(lines[0]["id"], 2);
    assert_eq!(lines[2]["id"], 4);
}

/// With `history_on_join = 0` nothing is kept and the list is empty.
#[rocket::async_test]
async fn a_zero_limit_keeps_no_history() {
    let dir = TempDir::new().unwrap();
    let client =
        common::client(dir.path(), &[("history_on_join", json!(0))]).await;
    let ann = common::login(&client, "Ann").await;
    common::say(&client, &ann, "not kept").await;
    assert!(history(&client, &ann).await.is_empty());
}

/// Stopping and starting the server keeps the lines; new lines continue
/// the ids, and a smaller limit after the restart shows only the newest.
#[rocket::async_test]
async fn history_survives_a_restart_and_its_ids_continue() {
    let dir = TempDir::new().unwrap();
    let ann = {
        let client = common::client(dir.path(), &[]).await;
        let ann = common::login(&client, "Ann").await;
        common::say(&client, &ann, "before").await;
        common::say(&client, &ann, "also before").await;
        client.terminate().await;
        ann
    };

    let client = common::client(dir.path(), &[]).await;
    common::say(&client, &ann, "after").await;
    let lines = history(&client, &ann).await;
    assert_eq!(texts(&lines), ["before", "also before", "after"]);
    assert_eq!(lines[2]["id"], 2);
    client.terminate().await;

    let client =
        common::client(dir.path(), &[("history_on_join", json!(2))]).await;
    let lines = history(&client, &ann).await;
    assert_eq!(texts(&lines), ["also before", "after"]);
    common::say(&client, &ann, "later").await;
    let lines = history(&client, &ann).await;
    assert_eq!(texts(&lines), ["after", "later"]);
    assert_eq!(lines[1]["id"], 3);
}

/// Without a live session the history answers bad_session: no cookie, a
/// forged one, or one that left.
#[rocket::async_test]
async fn history_without_a_live_session_answers_bad_session() {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    let ann = common::login(&client, "Ann").await;
    common::say(&client, &ann, "secret-ish").await;

    let res = client.get("/chat/history/").dispatch().await;
    let body: Value = serde_json::from_str(&res.into_string().await.unwrap())
        .expect("a JSON envelope");
    assert_eq!(body, json!({"status": "error", "response": "bad_session"}));

    let forged = "0".repeat(64);
    let (status, json) =
        common::get_json(&client, "/chat/history/", &forged).await;
    assert_eq!(status.code, 200);
    assert_eq!(json["response"], "bad_session");

    common::get_json(&client, "/chat/leave/", &ann).await;
    let (_, json) = common::get_json(&client, "/chat/history/", &ann).await;
    assert_eq!(json["response"], "bad_session");
}

/// The history is an API answer like the others: not cached.
#[rocket::async_test]
async fn history_answers_are_not_cached() {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    let ann = common::login(&client, "Ann").await;
    let res = client
        .get("/chat/history/")
        .cookie(rocket::http::Cookie::new("chat_sess", ann))
        .dispatch()
        .await;
    assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
}
