//! Shared helpers: every test builds its own room or server on its own
//! temporary data directory, so tests run in parallel and in any order.
#![allow(dead_code)]

pub mod process;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use natter::config::Settings;
use natter::error::Error;
use natter::room::Room;
use rocket::figment::Figment;
use rocket::http::{ContentType, Cookie, Status};
use rocket::local::asynchronous::Client;
use serde_json::Value;
use tempfile::TempDir;

/// Settings for a test room: short long-poll timeout, everything else as
/// shipped.
pub fn settings(dir: &Path) -> Settings {
    Settings {
        data_dir: dir.to_path_buf().into(),
        comet_timeout: 2,
        ..Settings::default()
    }
}

/// Opens a room on `dir`, retrying while a just-dropped instance still
/// holds the directory lock (its background tasks end a moment later).
pub async fn open_room(settings: &Settings) -> Arc<Room> {
    for _ in 0..100 {
        match Room::open(settings) {
            Ok(room) => return room,
            Err(Error::Locked(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot open the room: {e}"),
        }
    }
    panic!("the data directory stayed locked");
}

/// A fresh room on a fresh directory.
pub async fn fresh_room() -> (TempDir, Arc<Room>) {
    let dir = TempDir::new().expect("temp dir");
    let room = open_room(&settings(dir.path())).await;
    (dir, room)
}

/// The Figment of a test server on `dir`, with extra settings on top.
pub fn figment(dir: &Path, extra: &[(&str, Value)]) -> Figment {
    let mut figment = natter::figment()
        .merge(("data_dir", dir.display().to_string()))
        .merge(("comet_timeout", 2))
        .merge(("log_level", "off"));
    for (key, value) in extra {
        figment = figment.merge((*key, value.clone()));
    }
    figment
}

/// A local HTTP client over a server on `dir`.
pub async fn client(dir: &Path, extra: &[(&str, Value)]) -> Client {
    for _ in 0..100 {
        match natter::rocket(figment(dir, extra)) {
            Ok(rocket) => {
                return Client::untracked(rocket).await.expect("valid rocket")
            }
            Err(Error::Locked(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot build the server: {e}"),
        }
    }
    panic!("the data directory stayed locked");
}

/// Logs in and returns the session cookie's value.
pub async fn login(client: &Client, nick: &str) -> String {
    let res = client
        .post("/login/")
        .header(ContentType::Form)
        .body(format!("nick={nick}"))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther, "login of {nick} failed");
    res.cookies()
        .get("chat_sess")
        .expect("login sets the session cookie")
        .value()
        .to_string()
}

/// GETs an API path with a session cookie and parses the envelope.
pub async fn get_json(
    client: &Client,
    path: &str,
    token: &str,
) -> (Status, Value) {
    let res = client
        .get(path.to_string())
        .cookie(Cookie::new("chat_sess", token.to_string()))
        .dispatch()
        .await;
    let status = res.status();
    let body = res.into_string().await.unwrap_or_default();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("not JSON from {path}: {body}"));
    (status, json)
}

/// POSTs a form to an API path with a session cookie.
pub async fn post_form(
    client: &Client,
    path: &str,
    token: &str,
    body: impl AsRef<[u8]>,
) -> (Status, Value) {
    let res = client
        .post(path.to_string())
        .header(ContentType::Form)
        .cookie(Cookie::new("chat_sess", token.to_string()))
        .body(body)
        .dispatch()
        .await;
    let status = res.status();
    let body = res.into_string().await.unwrap_or_default();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("not JSON from {path}: {body}"));
    (status, json)
}

/// Sends a chat message through the API and checks it was accepted.
pub async fn say(client: &Client, token: &str, msg: &str) {
    let body = format!("msg={}", urlencode(msg));
    let (status, json) =
        post_form(client, "/chat/send_msg/", token, body).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(json["status"], "ok", "send failed: {json}");
}

/// Percent-encodes a form value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
