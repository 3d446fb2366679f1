//! The HTTP contract, through Rocket's local client: pages, the JSON
//! envelope, and every kind of bad input.

mod common;

use rocket::http::{ContentType, Cookie, Status};
use rocket::local::asynchronous::Client;
use serde_json::json;
use tempfile::TempDir;

async fn server() -> (TempDir, Client) {
    let dir = TempDir::new().unwrap();
    let client = common::client(dir.path(), &[]).await;
    (dir, client)
}

/// The next message id of a session.
async fn start(client: &Client, token: &str) -> u64 {
    let (_, json) = common::get_json(client, "/chat/start/", token).await;
    json["response"].as_u64().expect("a number")
}

/// The login page is a form posting `nick` to /login/.
#[rocket::async_test]
async fn the_login_page_has_the_form() {
    let (_dir, client) = server().await;
    let res = client.get("/").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.content_type(), Some(ContentType::HTML));
    let body = res.into_string().await.unwrap();
    assert!(body.contains(r#"action="/login/""#), "{body}");
    assert!(body.contains(r#"name="nick""#), "{body}");
}

/// Login redirects to the chat with an HttpOnly, SameSite=Strict session
/// cookie on path /, and the chat page then greets the user.
#[rocket::async_test]
async fn login_sets_the_session_cookie_and_redirects() {
    let (_dir, client) = server().await;
    let res = client
        .post("/login/")
        .header(ContentType::Form)
        .body("nick=Ann")
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/chat/"));
    let set_cookie = res.headers().get_one("Set-Cookie").unwrap().to_string();
    assert!(set_cookie.starts_with("chat_sess="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let token = res.cookies().get("chat_sess").unwrap().value().to_string();
    assert_eq!(token.len(), 64);

    let page = client
        .get("/chat/")
        .cookie(Cookie::new("chat_sess", token))
        .dispatch()
        .await;
    assert_eq!(page.status(), Status::Ok);
    assert!(page.into_string().await.unwrap().contains("Ann"));
}

/// A refused login shows the login page again with the reason.
#[rocket::async_test]
async fn a_refused_login_shows_the_reason() {
    let (_dir, client) = server().await;
    common::login(&client, "Ann").await;
    for (nick, words) in [("D%40ve", "alphanumeric"), ("ann", "not available")]
    {
        let res = client
            .post("/login/")
            .header(ContentType::Form)
            .body(format!("nick={nick}"))
            .dispatch()
            .await;
        assert!(res.status().class().is_client_error(), "{}", res.status());
        assert!(res.cookies().get("chat_sess").is_none());
        let body = res.into_string().await.unwrap();
        assert!(body.contains(words), "{nick}: {body}");
        assert!(body.contains(r#"action="/login/""#));
    }
}

/// The chat page without a live session redirects to the login page.
#[rocket::async_test]
async fn the_chat_page_without_a_session_redirects_to_login() {
    let (_dir, client) = server().await;
    let res = client.get("/chat/").dispatch().await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/"));
    let forged = client
        .get("/chat/")
        .cookie(Cookie::new("chat_sess", "0".repeat(64)))
        .dispatch()
        .await;
    assert_eq!(forged.headers().get_one("Location"), Some("/"));
}

/// Every API call without a session, or with a forged one, answers 200
/// with bad_session.
#[rocket::async_test]
async fn api_calls_without_a_valid_session_answer_bad_session() {
    let (_dir, client) = server().await;
    let bad_session = json!({"status": "error", "response": "bad_session"});
    for token in ["", "forged", &"a".repeat(64), "%00%ff"] {
        for path in [
            "/chat/start/",
            "/chat/online/",
            "/chat/wait/?msg_id=0",
            "/chat/leave/",
        ] {
            let (status, json) = common::get_json(&client, path, token).await;
            assert_eq!((status, &json), (Status::Ok, &bad_session), "{path}");
        }
        for path in ["/chat/send_msg/", "/chat/leave/"] {
            let (status, json) =
                common::post_form(&client, path, token, "msg=hi").await;
            assert_eq!((status, &json), (Status::Ok, &bad_session), "{path}");
        }
    }
}

/// A missing or malformed msg_id answers 400 bad_msg_id and stores
/// nothing.
#[rocket::async_test]
async fn a_malformed_msg_id_answers_bad_msg_id() {
    let (_dir, client) = server().await;
    let token = common::login(&client, "Ann").await;
    let bad_id = json!({"status": "error", "response": "bad_msg_id"});
    for query in [
        "",
        "?",
        "?msg_id=",
        "?msg_id=abc",
        "?msg_id=-1",
        "?msg_id=%2B1",
        "?msg_id=1.5",
        "?msg_id=%201",
        "?msg_id=18446744073709551616",
        "?other=1",
    ] {
        let path = format!("/chat/wait/{query}");
        let (status, json) = common::get_json(&client, &path, &token).await;
        assert_eq!((status, &json), (Status::BadRequest, &bad_id), "{query}");
    }
    assert_eq!(start(&client, &token).await, 0);
}

/// A form body over the limit answers 413 with the envelope and sends
/// nothing; a body within the limit is accepted and cut to 256 characters.
#[rocket::async_test]
async fn an_oversized_body_is_refused_and_a_long_message_cut() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    let huge = format!("msg={}", "a".repeat(40 * 1024));
    let (status, json) =
        common::post_form(&client, "/chat/send_msg/", &ann, huge).await;
    assert_eq!(status, Status::PayloadTooLarge);
    assert_eq!(json["status"], "error");
    assert_eq!(start(&client, &ann).await, 0);

    let long = format!("msg={}", "b".repeat(20 * 1024));
    let (status, _) =
        common::post_form(&client, "/chat/send_msg/", &ann, long).await;
    assert_eq!(status, Status::Ok);
    let (_, json) =
        common::get_json(&client, "/chat/wait/?msg_id=0", &ann).await;
    let msg = json["response"][0]["d"]["msg"].as_str().unwrap();
    assert_eq!(msg, "b".repeat(256));
}

/// Invalid UTF-8 in a message is replaced, and the valid text around it
/// survives.
#[rocket::async_test]
async fn invalid_utf8_is_replaced_and_the_rest_kept() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    for body in [
        b"msg=caf%C3%A9 %FF ok".to_vec(),
        b"msg=raw \xff\xfe ok".to_vec(),
    ] {
        let (status, json) =
            common::post_form(&client, "/chat/send_msg/", &ann, body).await;
        assert_eq!((status, json["status"].as_str()), (Status::Ok, Some("ok")));
    }
    let (_, json) =
        common::get_json(&client, "/chat/wait/?msg_id=0", &ann).await;
    let msgs: Vec<&str> = json["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["d"]["msg"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, vec!["café \u{FFFD} ok", "raw \u{FFFD}\u{FFFD} ok"]);
}

/// A send without a msg field is a clear error and sends nothing.
#[rocket::async_test]
async fn a_send_without_msg_is_refused() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    let (status, json) =
        common::post_form(&client, "/chat/send_msg/", &ann, "text=hi").await;
    assert_eq!(status, Status::BadRequest);
    assert_eq!(json, json!({"status": "error", "response": "missing_msg"}));
    assert_eq!(start(&client, &ann).await, 0);
}

/// Unknown paths answer 404: the envelope under /chat/, text elsewhere.
#[rocket::async_test]
async fn unknown_paths_answer_404() {
    let (_dir, client) = server().await;
    let (status, json) = common::get_json(&client, "/chat/nope/", "").await;
    assert_eq!(status, Status::NotFound);
    assert_eq!(json, json!({"status": "error", "response": "not_found"}));
    let res = client.get("/no/such/page").dispatch().await;
    assert_eq!(res.status(), Status::NotFound);
    let res = client.put("/chat/send_msg/").dispatch().await;
    assert_eq!(res.status(), Status::NotFound);
}

/// API answers are JSON and carry Cache-Control: no-store.
#[rocket::async_test]
async fn api_answers_are_json_and_not_cached() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    for path in ["/chat/start/", "/chat/online/", "/chat/nope/"] {
        let res = client
            .get(path)
            .cookie(Cookie::new("chat_sess", ann.clone()))
            .dispatch()
            .await;
        assert_eq!(res.content_type(), Some(ContentType::JSON), "{path}");
        assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
    }
}

/// Two users chat through the HTTP API and see each other online.
#[rocket::async_test]
async fn two_users_chat_over_http() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    let bob = common::login(&client, "Bob").await;
    let (_, online) = common::get_json(&client, "/chat/online/", &ann).await;
    assert_eq!(online["response"], json!(["Ann", "Bob"]));

    let ann_from = start(&client, &ann).await;
    common::say(&client, &bob, "<script>alert(1)</script>").await;
    let path = format!("/chat/wait/?msg_id={ann_from}");
    let (_, json) = common::get_json(&client, &path, &ann).await;
    let event = &json["response"][0];
    assert_eq!(event["t"], "chat_msg");
    assert_eq!(event["id"], ann_from);
    assert_eq!(
        event["d"],
        json!({"nick": "Bob", "msg": "<script>alert(1)</script>"})
    );
    assert!(event["ts"].as_u64().unwrap() > 1_600_000_000_000);

    let (_, json) =
        common::get_json(&client, "/chat/wait/?msg_id=0", &bob).await;
    assert_eq!(json["response"][0]["t"], "sent_chat_msg");
}

/// A wait with nothing to deliver answers reconnect after comet_timeout.
#[rocket::async_test]
async fn an_empty_wait_answers_reconnect() {
    let dir = TempDir::new().unwrap();
    let client =
        common::client(dir.path(), &[("comet_timeout", json!(1))]).await;
    let ann = common::login(&client, "Ann").await;
    let (status, json) =
        common::get_json(&client, "/chat/wait/?msg_id=0", &ann).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(json, json!({"status": "ok", "response": "reconnect"}));
}

/// A wait beyond the mailbox answers resync at once.
#[rocket::async_test]
async fn a_wait_beyond_the_mailbox_answers_resync() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    let (status, json) =
        common::get_json(&client, "/chat/wait/?msg_id=500", &ann).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(json, json!({"status": "error", "response": "resync"}));
}

/// Leaving works by GET and by POST, drops the cookie, and ends the
/// session for good.
#[rocket::async_test]
async fn leave_works_by_get_and_post() {
    let (_dir, client) = server().await;
    let ann = common::login(&client, "Ann").await;
    let bob = common::login(&client, "Bob").await;
    let (_, json) = common::get_json(&client, "/chat/leave/", &ann).await;
    assert_eq!(json, json!({"status": "ok", "response": ""}));
    let (_, json) = common::post_form(&client, "/chat/leave/", &bob, "").await;
    assert_eq!(json, json!({"status": "ok", "response": ""}));
    for token in [&ann, &bob] {
        let (_, json) = common::get_json(&client, "/chat/start/", token).await;
        assert_eq!(json["response"], "bad_session");
    }
}

/// Stopping and starting the server keeps the session cookie valid and
/// delivers what was sent before the restart.
#[rocket::async_test]
async fn a_restart_keeps_the_session_and_pending_events() {
    let dir = TempDir::new().unwrap();
    let (ann, bob, from) = {
        let client = common::client(dir.path(), &[]).await;
        let ann = common::login(&client, "Ann").await;
        let bob = common::login(&client, "Bob").await;
        let from = start(&client, &ann).await;
        common::say(&client, &bob, "before the restart").await;
        client.terminate().await;
        (ann, bob, from)
    };
    let client = common::client(dir.path(), &[]).await;
    let path = format!("/chat/wait/?msg_id={from}");
    let (_, json) = common::get_json(&client, &path, &ann).await;
    assert_eq!(json["response"][0]["d"]["msg"], "before the restart");
    common::say(&client, &bob, "after").await;
    let path = format!("/chat/wait/?msg_id={}", from + 1);
    let (_, json) = common::get_json(&client, &path, &ann).await;
    assert_eq!(json["response"][0]["id"], from + 1);
    let res = client
        .post("/login/")
        .header(ContentType::Form)
        .body("nick=ANN")
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Conflict);
}

/// The static client and stylesheet are served.
#[rocket::async_test]
async fn the_static_client_is_served() {
    let (_dir, client) = server().await;
    for path in ["/static/client.js", "/static/site.css"] {
        let res = client.get(path).dispatch().await;
        assert_eq!(res.status(), Status::Ok, "{path}");
    }
}

/// A wait from an id the mailbox already dropped answers the kept events
/// and a `gap` naming the dropped ids, all as one valid JSON envelope with
/// the event fields the classic clients read.
#[rocket::async_test]
async fn a_wait_behind_the_capacity_gets_the_gap_and_the_kept_events() {
    let dir = TempDir::new().unwrap();
    let extra = [("mailbox_capacity", json!(3))];
    let client = common::client(dir.path(), &extra).await;
    let ann = common::login(&client, "Ann").await;
    let from = start(&client, &ann).await;
    for n in 0..5 {
        common::say(&client, &ann, &format!("line {n} \"q\"")).await;
    }

    let path = format!("/chat/wait/?msg_id={from}");
    let (status, json) = common::get_json(&client, &path, &ann).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(json["status"], "ok");
    assert_eq!(json["gap"], json!({ "from": from, "to": from + 1 }));
    let events = json["response"].as_array().expect("events");
    let msgs: Vec<&str> = events
        .iter()
        .map(|e| e["d"]["msg"].as_str().expect("a msg"))
        .collect();
    assert_eq!(msgs, vec!["line 2 \"q\"", "line 3 \"q\"", "line 4 \"q\""]);
    assert_eq!(events[0]["id"], json!(from + 2));
    assert_eq!(events[0]["t"], "sent_chat_msg");
    assert_eq!(events[0]["d"]["nick"], "Ann");
    assert!(events[0]["ts"].is_u64());
}

/// A login form over the size limit shows the login page again with the
/// reason, like every other refused login.
#[rocket::async_test]
async fn an_oversized_login_shows_the_login_page_with_the_reason() {
    let (_dir, client) = server().await;
    let res = client
        .post("/login/")
        .header(ContentType::Form)
        .body(format!("nick={}", "n".repeat(40_000)))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::PayloadTooLarge);
    assert_eq!(res.content_type(), Some(ContentType::HTML));
    assert!(res.cookies().get("chat_sess").is_none());
    let body = res.into_string().await.unwrap();
    assert!(body.contains(r#"action="/login/""#), "{body}");
    assert!(body.contains("far too large"), "{body}");
}

/// An empty data_dir is refused at start-up instead of putting the data
/// in whatever folder the server was started from.
#[test]
fn an_empty_data_dir_is_refused() {
    let figment = natter::figment().merge(("data_dir", ""));
    match natter::rocket(figment) {
        Err(natter::error::Error::Config(why)) => {
            assert!(why.contains("data_dir"), "{why}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("an empty data_dir was accepted"),
    }
}
