//! Drives Debian's headless Chromium through chromedriver for the browser
//! tests: one chromedriver per test on a free port, one Chromium profile
//! (its own fresh `--user-data-dir`) per person, screenshots of the final
//! state, and waits that fail with what they last saw.
//!
//! Nothing here skips: when the browser or its driver cannot start, the
//! test fails and says why.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::Semaphore;

/// Where Debian puts the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Scenarios that may run at once: each holds two or more Chromium
/// processes, and the machine has two cores.
static SLOTS: Semaphore = Semaphore::const_new(3);

/// A test's failure, as text.
pub type Outcome = Result<(), String>;

/// Turns any displayable error into the test's failure text.
pub fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Fails with `text` unless `ok`.
pub fn ensure(ok: bool, text: impl FnOnce() -> String) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(text())
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("a local address").port()
}

/// A chromedriver process of our own; killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    pub fn start() -> Result<Driver, String> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            ensure(Path::new(path).exists(), || {
                format!(
                    "{path} is missing: install Debian's chromium and \
                     chromium-driver (`bash tests/run` does)"
                )
            })?;
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(fail("cannot run chromedriver"))?;
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        driver.wait_ready()?;
        Ok(driver)
    }

    /// Polls `/status` until the driver says it is ready.
    fn wait_ready(&mut self) -> Outcome {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited with {status}"));
            }
            let ready = agent
                .get(&format!("{}/status", self.url))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("chromedriver did not get ready within 20 s".into())
    }

    /// Starts a Chromium with a fresh profile, a window of this size and
    /// these extra command-line flags.
    pub async fn browser(
        &self,
        width: u32,
        height: u32,
        flags: &[&str],
    ) -> Result<Browser, String> {
        let profile = TempDir::new().map_err(fail("no temp dir"))?;
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if width < 500 {
            // Chromium's windows are at least 500 px wide; narrower
            // viewports are emulated, as for a phone.
            options["mobileEmulation"] = json!({ "deviceMetrics": {
                "width": width, "height": height, "pixelRatio": 1.0,
            }});
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .map_err(fail("Chromium did not start under chromedriver"))?;
        Ok(Browser {
            client,
            _profile: profile,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One person's browser: a WebDriver session on its own profile.
pub struct Browser {
    pub client: Client,
    _profile: TempDir,
}

/// Where screenshots go: `target/browser-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
        });
    target.join("browser-screenshots")
}

/// Things a scenario hands over to outlive it until the screenshots are
/// taken (its server, its data directory), so they show the final state.
#[derive(Clone, Default)]
pub struct Keeper(Arc<Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl Keeper {
    /// Holds `item` until the scenario's screenshots are saved, also when
    /// the scenario fails or panics first.
    pub fn hold<T: Send + 'static>(&self, item: T) -> Held<T> {
        Held {
            item: Some(item),
            keeper: self.clone(),
        }
    }
}

impl Keeper {
    /// Drops what it holds, newest first (a server before its directory).
    fn release(self) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(item) = kept.pop() {
            drop(item);
        }
    }
}

/// A value the [`Keeper`] takes over when it is dropped.
pub struct Held<T: Send + 'static> {
    item: Option<T>,
    keeper: Keeper,
}

impl<T: Send + 'static> Held<T> {
    /// Takes the value back, for example to stop a server on purpose.
    pub fn take(mut self) -> T {
        self.item.take().expect("only taken once")
    }
}

impl<T: Send + 'static> std::ops::Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item.as_ref().expect("only taken once")
    }
}

impl<T: Send + 'static> Drop for Held<T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let mut kept =
                self.keeper.0.lock().unwrap_or_else(|p| p.into_inner());
            kept.push(Box::new(item));
        }
    }
}

/// Runs one scenario with `sizes.len()` browsers: `body` gets a page for
/// each and a [`Keeper`]. Whatever happens, each browser's final state is
/// saved as `<name>.png` (first browser) and `<name>.<n>.png`, then the
/// browsers close; a failure or panic in `body` then fails the test.
pub async fn scenario<F, Fut>(name: &str, sizes: &[(u32, u32)], body: F)
where
    F: FnOnce(Vec<Page>, Keeper) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    scenario_with_flags(name, sizes, &[], body).await
}

/// Runs one scenario as [`scenario`] does, with these extra Chromium
/// command-line flags for every browser.
pub async fn scenario_with_flags<F, Fut>(
    name: &str,
    sizes: &[(u32, u32)],
    flags: &[&str],
    body: F,
) where
    F: FnOnce(Vec<Page>, Keeper) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let driver = Driver::start().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut browsers = Vec::new();
    for (width, height) in sizes {
        match driver.browser(*width, *height, flags).await {
            Ok(browser) => browsers.push(browser),
            Err(e) => {
                for browser in browsers {
                    let _ = browser.client.close().await;
                }
                panic!("{name}: {e}");
            }
        }
    }

    let pages = browsers.iter().map(|b| Page(b.client.clone())).collect();
    let keeper = Keeper::default();
    let outcome = match tokio::spawn(body(pages, keeper.clone())).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(panic_text(e.into_panic())),
        Err(e) => Err(format!("the scenario was cancelled: {e}")),
    };

    for (n, browser) in browsers.into_iter().enumerate() {
        let file = match n {
            0 => format!("{name}.png"),
            n => format!("{name}.{}.png", n + 1),
        };
        save_screenshot(&browser.client, &file).await;
        let _ = browser.client.close().await;
    }
    drop(driver);
    keeper.release();
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

async fn save_screenshot(client: &Client, file: &str) {
    let dir = screenshot_dir();
    let saved = match client.screenshot().await {
        Ok(png) => std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join(file), png))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = saved {
        eprintln!("could not save the screenshot {file}: {e}");
    }
}

/// A browser tab showing Natter, with the reads and actions tests need.
#[derive(Clone)]
pub struct Page(pub Client);

/// How long a wait in a page may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

impl Page {
    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> Result<Value, String> {
        self.0
            .execute(script, vec![])
            .await
            .map_err(fail("script failed"))
    }

    /// Waits until `script` returns true; fails with what `show` returned
    /// last.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        show: &str,
    ) -> Outcome {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.js(script).await? == json!(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen = self.js(show).await.unwrap_or(Value::Null);
                return Err(format!(
                    "waited {}s for {what}; the page shows {seen}",
                    PATIENCE.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the tab shows now as `<file>` among the screenshots.
    pub async fn screenshot(&self, file: &str) {
        save_screenshot(&self.0, file).await;
    }

    /// Opens `url` in this tab.
    pub async fn goto(&self, url: &str) -> Outcome {
        self.0.goto(url).await.map_err(fail("navigation failed"))
    }

    /// The path of the page shown.
    pub async fn path(&self) -> Result<String, String> {
        let url = self.0.current_url().await.map_err(fail("no url"))?;
        Ok(url.path().to_string())
    }

    /// Logs in from the login page at `base` and waits for the chat to
    /// say it is connected.
    pub async fn login(&self, base: &str, nick: &str) -> Outcome {
        self.goto(&format!("{base}/")).await?;
        let input = self.find("#nick").await?;
        input
            .send_keys(nick)
            .await
            .map_err(fail("typing the nick"))?;
        self.find("button[type=submit]")
            .await?
            .click()
            .await
            .map_err(fail("pressing Join"))?;
        self.wait_connected().await?;
        let me = self
            .js("return document.getElementById('me').textContent")
            .await?;
        ensure(me == json!(nick), || {
            format!("logged in as {me}, not {nick}")
        })
    }

    /// Waits for the status pill to say connected.
    pub async fn wait_connected(&self) -> Outcome {
        self.wait_for(
            "the connected state",
            "const s = document.getElementById('status');\
             return !!s && s.dataset.state === 'online';",
            "document.body.innerText",
        )
        .await
    }

    /// The element matching a CSS selector.
    pub async fn find(
        &self,
        css: &str,
    ) -> Result<fantoccini::elements::Element, String> {
        self.0
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("no element {css}: {e}"))
    }

    /// Types a line into the message box and presses Enter; checks the box
    /// is empty again and still has the focus.
    pub async fn say(&self, text: &str) -> Outcome {
        let input = self.find("#msg").await?;
        let enter: char = fantoccini::key::Key::Enter.into();
        input
            .send_keys(&format!("{text}{enter}"))
            .await
            .map_err(fail("typing a message"))?;
        let state = self
            .js("const i = document.getElementById('msg');\
                 return [i.value, document.activeElement === i];")
            .await?;
        ensure(state == json!(["", true]), || {
            format!("after Enter the input shows {state} (value, focused)")
        })
    }

    /// The chat lines shown, as `[nick, text, mine]`.
    pub async fn chat_lines(
        &self,
    ) -> Result<Vec<(String, String, bool)>, String> {
        let lines = self
            .js(&format!("{CHAT_LINES_FN} return chatLines();"))
            .await?;
        serde_json::from_value(lines).map_err(fail("odd chat lines"))
    }

    /// Waits until the chat lines' texts are exactly `texts`.
    pub async fn wait_chat(&self, texts: &[&str]) -> Outcome {
        let want = serde_json::to_string(texts).expect("strings serialize");
        let script = format!(
            "{CHAT_LINES_FN} return JSON.stringify(chatLines().map(l => l[1])) \
             === JSON.stringify({want});"
        );
        let show = format!("{CHAT_LINES_FN} return chatLines();");
        self.wait_for(&format!("the chat lines {want}"), &script, &show)
            .await
    }

    /// Waits until the online list is exactly `nicks`.
    pub async fn wait_online(&self, nicks: &[&str]) -> Outcome {
        let want = serde_json::to_string(nicks).expect("strings serialize");
        let script = format!(
            "const n = [...document.querySelectorAll('#online li')]\
             .map(li => li.textContent); return JSON.stringify(n) === \
             JSON.stringify({want});"
        );
        let show = "return [...document.querySelectorAll('#online li')]\
                    .map(li => li.textContent);";
        self.wait_for(&format!("the online list {want}"), &script, show)
            .await
    }

    /// Waits until a notice or system line containing `text` is shown.
    pub async fn wait_notice(&self, text: &str) -> Outcome {
        let needle = serde_json::to_string(text).expect("strings serialize");
        let script = format!(
            "return [...document.querySelectorAll('#log .system, \
             #log .notice')].some(li => li.textContent.includes({needle}));"
        );
        let show = "return [...document.querySelectorAll('#log li')]\
                    .map(li => li.textContent);";
        self.wait_for(&format!("a notice with {needle}"), &script, show)
            .await
    }

    /// Waits until the status pill is in `state`.
    pub async fn wait_state(&self, state: &str) -> Outcome {
        let script = format!(
            "return document.getElementById('status').dataset.state \
             === '{state}';"
        );
        let show = "return document.getElementById('status').dataset.state;";
        self.wait_for(&format!("the state {state}"), &script, show)
            .await
    }
}

/// A script fragment defining `chatLines()`.
const CHAT_LINES_FN: &str = "function chatLines() { return [...document\
    .querySelectorAll('#log .msg')].map(li => [li.querySelector('.nick')\
    .textContent, li.querySelector('.text').textContent, \
    li.classList.contains('mine')]); }";

/// Chromium's own command to emulate the network going away and coming
/// back, in the shape fantoccini sends.
#[derive(Debug)]
pub struct NetworkConditions {
    pub offline: bool,
}

impl fantoccini::wd::WebDriverCompatibleCommand for NetworkConditions {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session.unwrap_or_default();
        base.join(&format!("session/{session}/chromium/network_conditions"))
    }

    fn method_and_body(
        &self,
        _url: &url::Url,
    ) -> (http::Method, Option<String>) {
        let body = json!({ "network_conditions": {
            "offline": self.offline,
            "latency": 0,
            "download_throughput": 10_000_000,
            "upload_throughput": 10_000_000,
        }});
        (http::Method::POST, Some(body.to_string()))
    }
}
