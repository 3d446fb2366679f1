//! Natter in a real browser: Debian's headless Chromium, driven through
//! chromedriver, against the real binary. Each scenario has two people,
//! each in a browser profile of their own, on one server of its own.
//!
//! A screenshot of every scenario's final state lands in
//! `target/browser-screenshots/<test name>.png` (the second person's as
//! `<test name>.2.png`), also when it fails.

mod common;
#[path = "browser/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::Duration;

use common::process::{self, Server, Session};
use harness::{
    ensure, fail, scenario, scenario_with_flags, Held, Keeper,
    NetworkConditions, Outcome, Page,
};
use serde_json::json;

const DESKTOP: (u32, u32) = (1000, 700);
const PHONE: (u32, u32) = (390, 844);

/// Each chat line's time stamp and whether it continues a group.
const STAMPS_AND_GROUPING: &str = "return [...document\
    .querySelectorAll('#log .msg')].map(li => \
    [li.querySelector('time').textContent, li.classList.contains('cont')]);";

/// Whether no script ran and no markup was made from a message.
const NOTHING_RAN: &str = "return [window.pwned === undefined, document\
    .querySelectorAll('#log b, #log script, #log img').length];";

/// The viewport width, and whether the page fits it without scrolling
/// sideways.
const FITS: &str = "return [innerWidth, \
    document.documentElement.scrollWidth <= innerWidth];";

/// Whether each control lies wholly inside the viewport.
const ON_SCREEN: &str = "return ['#msg', '#say button', '#online', \
    '#logout', '#log .msg:last-child'].map(css => { \
    const r = document.querySelector(css).getBoundingClientRect(); \
    return r.width > 0 && r.left >= 0 && r.right <= innerWidth \
    && r.top >= 0 && r.bottom <= innerHeight; });";

/// Whether the log is scrolled to its newest line.
const AT_BOTTOM: &str = "const log = document.getElementById('log'); \
    return log.scrollHeight - log.scrollTop - log.clientHeight < 2;";

/// The log's scroll position and whether the jump button shows.
const SCROLL: &str = "const log = document.getElementById('log'); \
    return [log.scrollTop, !document.getElementById('jump').hidden, \
    log.scrollHeight, log.clientHeight];";

/// A fresh data directory, kept until the screenshots are taken.
fn data_dir(keep: &Keeper) -> PathBuf {
    let (guard, dir) = process::data_dir();
    drop(keep.hold(guard));
    dir
}

/// The real binary on a fresh data directory, both kept until the
/// screenshots are taken.
fn serve(keep: &Keeper, env: &[(&str, &str)]) -> (Held<Server>, PathBuf) {
    let dir = data_dir(keep);
    (keep.hold(process::start(&dir, env)), dir)
}

/// Two people log in and chat.
async fn ann_and_bob(base: &str, ann: &Page, bob: &Page) -> Outcome {
    ann.login(base, "Ann").await?;
    bob.login(base, "Bob").await?;
    ann.wait_online(&["Ann", "Bob"]).await?;
    bob.wait_online(&["Ann", "Bob"]).await
}

/// Each sees the other in the online list, and both see every message in
/// the order it was sent, with a time stamp, own lines marked as such and
/// a run of one sender's lines grouped; a hidden page counts unread
/// messages in its title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_see_each_other_and_their_messages_in_order() {
    scenario(
        "two_people_see_each_other_and_their_messages_in_order",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;

            let script = ["Hello Bob", "Hi Ann", "How are you?", "Fine."];
            let speakers = [ann, bob, ann, ann];
            for (n, (text, who)) in script.iter().zip(speakers).enumerate() {
                who.say(text).await?;
                ann.wait_chat(&script[..=n]).await?;
                bob.wait_chat(&script[..=n]).await?;
            }

            let lines = ann.chat_lines().await?;
            let expect = [
                ("Ann", "Hello Bob", true),
                ("Bob", "Hi Ann", false),
                ("Ann", "How are you?", true),
                ("Ann", "Fine.", true),
            ];
            let expect: Vec<_> = expect
                .iter()
                .map(|(n, t, m)| (n.to_string(), t.to_string(), *m))
                .collect();
            ensure(lines == expect, || format!("Ann sees {lines:?}"))?;
            let bob_mine: Vec<bool> =
                bob.chat_lines().await?.iter().map(|l| l.2).collect();
            ensure(bob_mine == [false, true, false, false], || {
                format!("Bob's own lines marked {bob_mine:?}")
            })?;

            let look = bob.js(STAMPS_AND_GROUPING).await?;
            let stamps = look.as_array().cloned().unwrap_or_default();
            ensure(stamps.len() == 4, || format!("lines: {look}"))?;
            for stamp in &stamps {
                let text = stamp[0].as_str().unwrap_or("");
                ensure(text.chars().any(|c| c.is_ascii_digit()), || {
                    format!("a line without a time stamp: {look}")
                })?;
            }
            let grouped: Vec<_> = stamps.iter().map(|s| s[1].clone()).collect();
            let want = json!([false, false, false, true]);
            ensure(json!(grouped) == want, || {
                format!("grouping of consecutive lines: {look}")
            })?;

            // While Ann's window is minimised, the title counts unread
            // messages; back in view, the count goes.
            ann.0.minimize_window().await.map_err(fail("minimise"))?;
            ann.wait_for("a hidden page", "return document.hidden;", "null")
                .await?;
            bob.say("Are you there?").await?;
            bob.say("Hello?").await?;
            ann.wait_for(
                "two unread in the title",
                "return document.title === '(2) Natter';",
                "return document.title;",
            )
            .await?;
            ann.0.maximize_window().await.map_err(fail("restore"))?;
            ann.wait_for(
                "the title without a count",
                "return !document.hidden && document.title === 'Natter';",
                "return [document.hidden, document.title];",
            )
            .await?;
            Ok(())
        },
    )
    .await;
}

/// A message with HTML and a script in it shows as the text it is, live
/// and from the history after a reload, and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_html_and_script_shows_as_text() {
    scenario(
        "a_message_with_html_and_script_shows_as_text",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;

            let nasty = "<b>bold</b><script>window.pwned=1</script>\
                         <img src=x onerror=\"window.pwned=2\"> & &amp;";
            ann.say(nasty).await?;
            bob.wait_chat(&[nasty]).await?;
            for _ in 0..2 {
                let found = bob.js(NOTHING_RAN).await?;
                ensure(found == json!([true, 0]), || {
                    format!("markup was interpreted: {found}")
                })?;
                bob.0.refresh().await.map_err(fail("reload"))?;
                bob.wait_connected().await?;
                bob.wait_chat(&[nasty]).await?;
            }
            Ok(())
        },
    )
    .await;
}

/// A reload keeps the session (no new login) and shows the recent
/// conversation once, then carries on with new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_keeps_the_session_and_shows_the_recent_conversation() {
    scenario(
        "reloading_keeps_the_session_and_shows_the_recent_conversation",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;
            ann.say("one").await?;
            bob.wait_chat(&["one"]).await?;
            bob.say("two").await?;
            ann.say("three").await?;
            bob.wait_chat(&["one", "two", "three"]).await?;

            bob.0.refresh().await.map_err(fail("reload"))?;
            bob.wait_connected().await?;
            let path = bob.path().await?;
            ensure(path == "/chat/", || {
                format!("after a reload Bob is at {path}")
            })?;
            bob.wait_chat(&["one", "two", "three"]).await?;
            let mine: Vec<bool> =
                bob.chat_lines().await?.iter().map(|l| l.2).collect();
            ensure(mine == [false, true, false], || {
                format!("after a reload Bob's own lines are marked {mine:?}")
            })?;
            bob.wait_online(&["Ann", "Bob"]).await?;

            ann.say("four").await?;
            bob.wait_chat(&["one", "two", "three", "four"]).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            bob.wait_chat(&["one", "two", "three", "four"]).await?;
            Ok(())
        },
    )
    .await;
}

/// The server stops and starts while both pages are open: both show the
/// connection dropped, reconnect by themselves, and get every message sent
/// around the restart exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pages_reconnect_after_a_restart_and_miss_nothing() {
    scenario(
        "both_pages_reconnect_after_a_restart_and_miss_nothing",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let dir = data_dir(&keep);
            let port = harness::free_port().to_string();
            let env = [("ROCKET_PORT", port.as_str())];
            let server = keep.hold(process::start(&dir, &env));
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;
            let cy = Session::login(&server, "Cy");
            ann.wait_online(&["Ann", "Bob", "Cy"]).await?;

            ann.say("before the stop").await?;
            bob.wait_chat(&["before the stop"]).await?;
            cy.say("just before the stop");
            server.take().terminate();
            for page in [ann, bob] {
                page.wait_state("offline").await?;
                page.wait_notice("Connection lost").await?;
            }

            let server = keep.hold(process::start(&dir, &env));
            cy.on(&server).say("right after the start");
            let all = [
                "before the stop",
                "just before the stop",
                "right after the start",
            ];
            for page in [ann, bob] {
                page.wait_notice("Reconnected").await?;
                page.wait_connected().await?;
                page.wait_chat(&all).await?;
            }
            bob.say("after the restart").await?;
            let all = [all[0], all[1], all[2], "after the restart"];
            ann.wait_chat(&all).await?;
            bob.wait_chat(&all).await?;
            ann.wait_online(&["Ann", "Bob", "Cy"]).await?;
            Ok(())
        },
    )
    .await;
}

/// After a restart with nothing said, the page shows it is connected
/// again within its backoff, not only when its first long poll returns
/// (30 s later by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_page_shows_it_is_back_soon_after_a_restart() {
    scenario(
        "a_quiet_page_shows_it_is_back_soon_after_a_restart",
        &[DESKTOP],
        |pages, keep| async move {
            let dir = data_dir(&keep);
            let port = harness::free_port().to_string();
            let env = [
                ("ROCKET_PORT", port.as_str()),
                ("ROCKET_COMET_TIMEOUT", "60"),
            ];
            let server = keep.hold(process::start(&dir, &env));
            let ann = &pages[0];
            ann.login(&server.url(""), "Ann").await?;
            ann.wait_connected().await?;

            server.take().terminate();
            ann.wait_state("offline").await?;
            let _server = keep.hold(process::start(&dir, &env));
            ann.wait_connected().await?;
            ann.wait_notice("Reconnected").await
        },
    )
    .await;
}

/// Logging out takes the user off the other's list, back to the login
/// page, and the old session is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_removes_the_user_from_the_other_list() {
    scenario(
        "logging_out_removes_the_user_from_the_other_list",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;

            bob.find("#logout")
                .await?
                .click()
                .await
                .map_err(fail("click"))?;
            ann.wait_online(&["Ann"]).await?;
            ann.wait_notice("Bob left (normal)").await?;
            bob.wait_for(
                "the login page",
                "return !!document.getElementById('nick');",
                "return location.href;",
            )
            .await?;
            bob.goto(&format!("{base}/chat/")).await?;
            let path = bob.path().await?;
            ensure(path == "/", || {
                format!("after logout /chat/ shows {path}")
            })?;
            Ok(())
        },
    )
    .await;
}

/// A page that could not reach the server for longer than max_idle finds
/// its session ended: it says so plainly (timeout) and offers a way to log
/// in again, which works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_shows_a_clear_message_and_a_way_back_in() {
    const NAME: &str =
        "an_idle_timeout_shows_a_clear_message_and_a_way_back_in";
    scenario(NAME, &[DESKTOP, DESKTOP], |pages, keep| async move {
        // The ended marker lives max_idle seconds after the sweep. Bob's
        // page retries at most every 10 s (its capped backoff), so a
        // max_idle above that lets the page read why, however the
        // retries fall on a loaded machine.
        let env = [
            ("ROCKET_MAX_IDLE", "10"),
            ("ROCKET_CHECK_IDLE_INTERVAL", "1"),
            ("ROCKET_COMET_TIMEOUT", "2"),
        ];
        let (server, _) = serve(&keep, &env);
        let base = server.url("");
        let (ann, bob) = (&pages[0], &pages[1]);
        ann_and_bob(&base, ann, bob).await?;

        // Bob's browser loses the network, so Bob stops polling.
        let offline = NetworkConditions { offline: true };
        bob.0.issue_cmd(offline).await.map_err(fail("go offline"))?;
        bob.wait_state("offline").await?;
        ann.wait_online(&["Ann"]).await?;
        ann.wait_notice("Bob left (timeout)").await?;

        let online = NetworkConditions { offline: false };
        bob.0.issue_cmd(online).await.map_err(fail("go online"))?;
        bob.wait_for(
            "the session-ended banner",
            "const e = document.getElementById('ended');\
                 return !e.hidden && e.textContent.includes('timeout');",
            "return document.body.innerText;",
        )
        .await?;
        let state = bob
            .js("return [document.getElementById('say').hidden,\
                     document.getElementById('status').dataset.state];")
            .await?;
        ensure(state == json!([true, "ended"]), || {
            format!("after the timeout (input hidden, state): {state}")
        })?;

        bob.screenshot(&format!("{NAME}.ended.png")).await;
        bob.find("#relogin")
            .await?
            .click()
            .await
            .map_err(fail("click"))?;
        bob.login(&base, "Bob").await?;
        ann.wait_online(&["Ann", "Bob"]).await?;
        Ok(())
    })
    .await;
}

/// Opens more tabs of Ann's browser on the chat, up to `count` in all;
/// returns their window handles, the first tab first.
async fn open_tabs(
    ann: &Page,
    base: &str,
    count: usize,
) -> Result<Vec<fantoccini::wd::WindowHandle>, String> {
    let mut tabs = vec![ann.0.window().await.map_err(fail("window"))?];
    for _ in 1..count {
        let tab = ann.0.new_window(true).await.map_err(fail("new tab"))?;
        ann.0
            .switch_to_window(tab.handle.clone())
            .await
            .map_err(fail("switch"))?;
        ann.goto(&format!("{base}/chat/")).await?;
        ann.wait_connected().await?;
        tabs.push(tab.handle);
    }
    Ok(tabs)
}

/// Waits until every tab shows exactly `texts`; returns the indexes of
/// the tabs that hold the long poll.
async fn every_tab_shows(
    ann: &Page,
    tabs: &[fantoccini::wd::WindowHandle],
    texts: &[&str],
) -> Result<Vec<usize>, String> {
    let mut leaders = Vec::new();
    for (n, tab) in tabs.iter().enumerate() {
        ann.0
            .switch_to_window(tab.clone())
            .await
            .map_err(fail("switch"))?;
        ann.wait_chat(texts)
            .await
            .map_err(|e| format!("tab {}: {e}", n + 1))?;
        if ann.js("return natter.leader;").await? == json!(true) {
            leaders.push(n);
        }
    }
    Ok(leaders)
}

/// Ann's seven tabs stay open for 30 s (past Chromium's cache-lock stall
/// of identical polls); a send from the last one goes through, every tab
/// gets Bob's answer, one tab polls, and when it closes another takes
/// over and every remaining tab still gets new messages. Returns the six
/// tabs left open and the chat lines they show.
async fn seven_tabs(
    ann: &Page,
    bob: &Page,
    base: &str,
) -> Result<(Vec<fantoccini::wd::WindowHandle>, Vec<&'static str>), String> {
    let mut tabs = open_tabs(ann, base, 7).await?;
    tokio::time::sleep(Duration::from_secs(30)).await;

    ann.say("from the seventh tab").await?;
    ann.wait_chat(&["from the seventh tab"]).await?;
    bob.wait_chat(&["from the seventh tab"]).await?;
    bob.say("hello every tab").await?;
    let both = ["from the seventh tab", "hello every tab"];
    let leaders = every_tab_shows(ann, &tabs, &both).await?;
    ensure(leaders.len() == 1, || {
        format!("tabs holding the long poll: {leaders:?}")
    })?;

    // Close the polling tab: another one takes over.
    let leader = tabs.remove(leaders[0]);
    ann.0
        .switch_to_window(leader)
        .await
        .map_err(fail("switch"))?;
    ann.0.close_window().await.map_err(fail("close tab"))?;
    bob.say("still there?").await?;
    let all = [both[0], both[1], "still there?"];
    let leaders = every_tab_shows(ann, &tabs, &all).await?;
    ensure(leaders.len() == 1, || {
        format!("after the close, tabs holding the long poll: {leaders:?}")
    })?;
    ann.say("from a follower").await?;
    let all = [all[0], all[1], all[2], "from a follower"];
    bob.wait_chat(&all).await?;
    every_tab_shows(ann, &tabs, &all).await?;
    Ok((tabs, all.to_vec()))
}

/// Seven tabs of one browser on 127.0.0.1 (a secure context, so the tabs
/// share the poll through navigator.locks) keep sending and receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_seven_tabs_keeps_sending_and_receiving() {
    scenario(
        "a_browser_with_seven_tabs_keeps_sending_and_receiving",
        &[DESKTOP, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;
            let locks = ann.js("return !!navigator.locks;").await?;
            ensure(locks == json!(true), || "no navigator.locks".into())?;
            seven_tabs(ann, bob, &base).await.map(drop)
        },
    )
    .await;
}

/// Whether the page is a secure context, has navigator.locks, and elects
/// its polling tab by heartbeats.
const CONTEXT: &str = "return [window.isSecureContext, \
    navigator.locks !== undefined, natter.elect];";

/// Stops the client in a tab dead, without a farewell to the other tabs:
/// no more heartbeats, no poll.
const GO_SILENT: &str = "natter.channel.close(); natter.ended = true; \
    stepDown(); return true;";

/// Whether the session-ended banner shows.
const ENDED: &str = "return !document.getElementById('ended').hidden;";

/// What the page shows, for a failed wait.
const ENDED_SHOW: &str = "return document.body.innerText;";

/// Chromium flags that make `natter.test` a name for the loopback
/// address, so a page at `http://natter.test:PORT/` is not a secure
/// context (no navigator.locks), as on a LAN.
const PLAIN_HTTP_HOST: [&str; 2] = [
    "--host-resolver-rules=MAP natter.test 127.0.0.1",
    "--no-proxy-server",
];

/// Seven tabs on plain http from a host name that is not loopback (not a
/// secure context, so no navigator.locks, as on a LAN) elect their
/// polling tab by heartbeats and keep sending and receiving; the server's
/// cross-site guard accepts that origin. A polling tab that goes silent
/// is replaced too, and a logout in one tab ends the session in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_tabs_on_plain_http_from_another_host_keep_working() {
    scenario_with_flags(
        "seven_tabs_on_plain_http_from_another_host_keep_working",
        &[DESKTOP, DESKTOP],
        &PLAIN_HTTP_HOST,
        |pages, keep| async move {
            let (server, _) = serve(&keep, &[]);
            let base = format!("http://natter.test:{}", server.port);
            let (ann, bob) = (&pages[0], &pages[1]);
            ann_and_bob(&base, ann, bob).await?;
            let context = ann.js(CONTEXT).await?;
            ensure(context == json!([false, false, true]), || {
                format!("(secure context, locks, elected): {context}")
            })?;
            let (mut tabs, mut all) = seven_tabs(ann, bob, &base).await?;

            // The polling tab goes silent without a farewell, as a frozen
            // or crashed tab would: another takes over after the silence.
            let leaders = every_tab_shows(ann, &tabs, &all).await?;
            ensure(leaders.len() == 1, || {
                format!("before the silence, polling tabs: {leaders:?}")
            })?;
            let silent = tabs.remove(leaders[0]);
            ann.0
                .switch_to_window(silent)
                .await
                .map_err(fail("switch"))?;
            ann.js(GO_SILENT).await?;
            bob.say("after a silent leader").await?;
            all.push("after a silent leader");
            let leaders = every_tab_shows(ann, &tabs, &all).await?;
            ensure(leaders.len() == 1, || {
                format!("after the silence, polling tabs: {leaders:?}")
            })?;

            // Logging out in one tab ends the session in all the others.
            let last = tabs.pop().expect("five tabs are left");
            ann.0.switch_to_window(last).await.map_err(fail("switch"))?;
            ann.find("#logout")
                .await?
                .click()
                .await
                .map_err(fail("logout"))?;
            bob.wait_online(&["Bob"]).await?;
            for tab in tabs {
                ann.0.switch_to_window(tab).await.map_err(fail("switch"))?;
                ann.wait_for("the session-ended banner", ENDED, ENDED_SHOW)
                    .await?;
            }
            Ok(())
        },
    )
    .await;
}

/// On a 390 px wide window the login page and the chat fit the width, the
/// input and the online list are on screen, long words wrap, sending
/// works, and the view keeps to the newest line unless scrolled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_390_pixel_wide_window_is_usable() {
    scenario(
        "a_390_pixel_wide_window_is_usable",
        &[PHONE, DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &process::UNLIMITED);
            let base = server.url("");
            let (ann, bob) = (&pages[0], &pages[1]);

            ann.goto(&format!("{base}/")).await?;
            let login = ann.js(FITS).await?;
            ensure(login == json!([390, true]), || {
                format!("login page (width, fits): {login}")
            })?;
            ann_and_bob(&base, ann, bob).await?;
            bob.say(&"x".repeat(200)).await?;
            bob.say("a normal line").await?;
            ann.wait_chat(&[&"x".repeat(200), "a normal line"]).await?;
            ann.say("typed on a phone").await?;
            let long = "x".repeat(200);
            bob.wait_chat(&[&long, "a normal line", "typed on a phone"])
                .await?;

            let chat = ann.js(FITS).await?;
            ensure(chat == json!([390, true]), || {
                format!("chat page (width, fits): {chat}")
            })?;
            let on_screen = ann.js(ON_SCREEN).await?;
            ensure(on_screen == json!([true, true, true, true, true]), || {
                format!(
                    "on screen (input, send, list, logout, last): {on_screen}"
                )
            })?;

            // The view follows new lines while at the bottom, and stays
            // put once the reader scrolled up.
            let mut said = vec![long.clone(), "a normal line".into()];
            said.push("typed on a phone".into());
            for n in 1..=25 {
                said.push(format!("filler {n}"));
                bob.say(&said[said.len() - 1]).await?;
            }
            let texts: Vec<&str> = said.iter().map(String::as_str).collect();
            ann.wait_chat(&texts).await?;
            ann.wait_for("the newest line in view", AT_BOTTOM, SCROLL)
                .await?;
            ann.js("const log = document.getElementById('log');\
                    log.scrollTop = 0; log.dispatchEvent(new Event('scroll'));\
                    return true;")
                .await?;
            said.push("while scrolled up".into());
            bob.say("while scrolled up").await?;
            let texts: Vec<&str> = said.iter().map(String::as_str).collect();
            ann.wait_chat(&texts).await?;
            let kept = ann.js(SCROLL).await?;
            let overflows = kept[2].as_f64() > kept[3].as_f64();
            ensure(
                overflows && kept[0] == json!(0) && kept[1] == json!(true),
                || format!("after scrolling up (top, jump shown, ..): {kept}"),
            )?;
            ann.find("#jump")
                .await?
                .click()
                .await
                .map_err(fail("jump"))?;
            ann.wait_for("the newest line in view", AT_BOTTOM, SCROLL)
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Three tabs on plain http from another host share one elected poll
/// through a server restart: every tab shows the drop and the reconnect,
/// and gets every message sent around it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_on_plain_http_all_follow_a_restart() {
    scenario_with_flags(
        "tabs_on_plain_http_all_follow_a_restart",
        &[DESKTOP],
        &PLAIN_HTTP_HOST,
        |pages, keep| async move {
            let dir = data_dir(&keep);
            let port = harness::free_port().to_string();
            let env = [("ROCKET_PORT", port.as_str())];
            let server = keep.hold(process::start(&dir, &env));
            let base = format!("http://natter.test:{port}");
            let ann = &pages[0];
            ann.login(&base, "Ann").await?;
            let context = ann.js(CONTEXT).await?;
            ensure(context == json!([false, false, true]), || {
                format!("(secure context, locks, elected): {context}")
            })?;
            let tabs = open_tabs(ann, &base, 3).await?;
            let cy = Session::login(&server, "Cy");
            cy.say("before the stop");
            let leaders =
                every_tab_shows(ann, &tabs, &["before the stop"]).await?;
            ensure(leaders.len() == 1, || {
                format!("tabs holding the long poll: {leaders:?}")
            })?;

            server.take().terminate();
            for tab in &tabs {
                ann.0
                    .switch_to_window(tab.clone())
                    .await
                    .map_err(fail("switch"))?;
                ann.wait_state("offline").await?;
            }
            let server = keep.hold(process::start(&dir, &env));
            cy.on(&server).say("after the start");
            let all = ["before the stop", "after the start"];
            for tab in &tabs {
                ann.0
                    .switch_to_window(tab.clone())
                    .await
                    .map_err(fail("switch"))?;
                ann.wait_notice("Reconnected").await?;
                ann.wait_connected().await?;
                ann.wait_chat(&all).await?;
            }
            ann.say("from the last tab").await?;
            let all = [all[0], all[1], "from the last tab"];
            every_tab_shows(ann, &tabs, &all).await.map(drop)
        },
    )
    .await;
}

/// The log keeps at most this many entries (`MAX_LOG_ENTRIES` in
/// static/client.js).
const LOG_ENTRIES: u64 = 500;

/// A burst of 1500 people logging in and straight out again (one person
/// with curl can do this) while a page is open: the page keeps up, holds
/// only its newest log entries, stays connected and shows the next
/// message. Before the log was capped and laid out once per answer, 900
/// such pairs blocked the page for 40 s and the idle sweep ended its
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_and_leaves_leaves_the_page_responsive() {
    scenario(
        "a_burst_of_joins_and_leaves_leaves_the_page_responsive",
        &[DESKTOP],
        |pages, keep| async move {
            let (server, _) = serve(&keep, &process::UNLIMITED);
            let base = server.url("");
            let ann = &pages[0];
            ann.login(&base, "Ann").await?;
            ann.wait_connected().await?;

            let burst = base.clone();
            tokio::task::spawn_blocking(move || join_and_leave(&burst, 1500))
                .await
                .map_err(fail("the burst"))?;
            let bob = Session::login_at(&base, "Bob");
            bob.say("after the burst");

            ann.wait_chat(&["after the burst"]).await?;
            ann.wait_online(&["Ann", "Bob"]).await?;
            let entries = ann
                .js("return document.getElementById('log').childElementCount;")
                .await?;
            ensure(entries.as_u64().is_some_and(|n| n <= LOG_ENTRIES), || {
                format!("the log holds {entries} entries")
            })?;
            ann.wait_connected().await?;
            ann.wait_for("the newest line in view", AT_BOTTOM, SCROLL)
                .await?;
            ann.say("still here").await?;
            ann.wait_chat(&["after the burst", "still here"]).await
        },
    )
    .await;
}

/// `pairs` sessions, over four threads, each logging in and leaving.
fn join_and_leave(base: &str, pairs: usize) {
    const THREADS: usize = 4;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for n in 0..pairs / THREADS {
                    let session = Session::login_at(base, &format!("P{t}x{n}"));
                    let left = session.post("/chat/leave/", &[]).unwrap();
                    assert_eq!(left["status"], "ok", "{left}");
                }
            });
        }
    });
}
