//! Runs the real `natter` binary (the one Cargo builds for the tests) on a
//! temporary data directory, and talks to it over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running server process; killed when dropped.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Everything it printed, line by line, as it arrives.
    pub log: mpsc::Receiver<String>,
    /// What it printed before it listened.
    pub startup: Vec<String>,
}

/// The binary set up to run on `dir` with extra `ROCKET_*` variables.
fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ROCKET_DATA_DIR", dir)
        .env("ROCKET_PORT", "0")
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// What a run of the binary that ended by itself left behind.
pub struct Exited {
    pub success: bool,
    /// Standard output and standard error together.
    pub output: String,
    pub took: Duration,
}

/// Runs the binary with `args` on `dir` until it exits by itself; panics
/// if it is still running after `limit`.
pub fn run(dir: &Path, args: &[&str], limit: Duration) -> Exited {
    let started = std::time::Instant::now();
    let mut child = command(dir, &[])
        .args(args)
        .spawn()
        .expect("the natter binary starts");
    let (lines, log) = mpsc::channel();
    forward_lines(child.stdout.take().unwrap(), lines.clone());
    forward_lines(child.stderr.take().unwrap(), lines);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for natter") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let said: Vec<String> = log.try_iter().collect();
            panic!("natter {args:?} still ran after {limit:?}: {said:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    // The forwarding threads end when the pipes close.
    let output: Vec<String> = log.iter().collect();
    Exited {
        success: status.success(),
        output: output.join("\n"),
        took,
    }
}

/// Settings for tests that send faster, or log in more sessions from
/// one address, than the shipped rate limit and per-host cap allow.
pub const UNLIMITED: [(&str, &str); 2] = [
    ("ROCKET_RATE_LIMIT_MESSAGES", "0"),
    ("ROCKET_MAX_SESSIONS_PER_HOST", "0"),
];

/// Starts the binary on `dir` with extra `ROCKET_*` variables, and waits
/// until it listens.
pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut child =
        command(dir, env).spawn().expect("the natter binary starts");

    let (lines, log) = mpsc::channel();
    forward_lines(child.stdout.take().unwrap(), lines.clone());
    forward_lines(child.stderr.take().unwrap(), lines);

    let (port, startup) = wait_for_port(&log, &mut child);
    Server {
        child,
        port,
        log,
        startup,
    }
}

fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    lines: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
}

/// Reads the log until Rocket says where it launched; returns the port
/// and the lines before.
fn wait_for_port(
    log: &mpsc::Receiver<String>,
    child: &mut Child,
) -> (u16, Vec<String>) {
    let mut seen = Vec::new();
    loop {
        match log.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                if let Some(rest) = line.split("launched from http://").nth(1) {
                    let port = rest.trim().rsplit(':').next().unwrap();
                    return (port.parse().expect("a port number"), seen);
                }
                seen.push(line);
            }
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "the server did not start (exit: {status:?}); it said:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

impl Server {
    /// The base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(mut self) -> Duration {
        let started = std::time::Instant::now();
        signal(&self.child, "TERM");
        let status = self.child.wait().expect("wait for the server");
        assert!(status.success(), "the server exited with {status}");
        started.elapsed()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A browserless client of one session.
pub struct Session {
    agent: ureq::Agent,
    base: String,
    /// The session cookie's value.
    pub token: String,
}

impl Session {
    /// Logs in as `nick`.
    pub fn login(server: &Server, nick: &str) -> Session {
        Session::login_at(&server.url(""), nick)
    }

    /// Logs in as `nick` at a base URL such as `http://127.0.0.1:8000`.
    pub fn login_at(base: &str, nick: &str) -> Session {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(60))
            .build();
        let res = agent
            .post(&format!("{base}/login/"))
            .send_form(&[("nick", nick)])
            .expect("login answers");
        assert_eq!(res.status(), 303, "login of {nick}");
        let cookie = res.header("set-cookie").expect("a session cookie");
        let token = cookie
            .split(';')
            .next()
            .and_then(|c| c.strip_prefix("chat_sess="))
            .expect("the chat_sess cookie")
            .to_string();
        Session {
            agent,
            base: base.to_string(),
            token,
        }
    }

    /// A session whose cookie token is already known (from a fixture).
    pub fn with_token(server: &Server, token: &str) -> Session {
        Session {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(60))
                .build(),
            base: server.url(""),
            token: token.to_string(),
        }
    }

    /// The same session against another (restarted) server.
    pub fn on(&self, server: &Server) -> Session {
        Session {
            agent: self.agent.clone(),
            base: server.url(""),
            token: self.token.clone(),
        }
    }

    /// GETs an API path and returns the envelope.
    pub fn get(&self, path: &str) -> Result<Value, Box<ureq::Error>> {
        let res = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Cookie", &format!("chat_sess={}", self.token))
            .call()
            .map_err(Box::new)?;
        Ok(res.into_json().expect("a JSON envelope"))
    }

    /// POSTs a form to an API path and returns the envelope.
    pub fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, Box<ureq::Error>> {
        let res = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Cookie", &format!("chat_sess={}", self.token))
            .send_form(form)
            .map_err(Box::new)?;
        Ok(res.into_json().expect("a JSON envelope"))
    }

    /// GETs an API path; any failure (connection, status, body) is an
    /// `Err` with a description, never a panic.
    pub fn try_get(&self, path: &str) -> Result<Value, String> {
        let res = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Cookie", &format!("chat_sess={}", self.token))
            .call()
            .map_err(|e| e.to_string())?;
        res.into_json().map_err(|e| e.to_string())
    }

    /// POSTs a form like [`Session::try_get`] GETs.
    pub fn try_post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, String> {
        let res = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Cookie", &format!("chat_sess={}", self.token))
            .send_form(form)
            .map_err(|e| e.to_string())?;
        res.into_json().map_err(|e| e.to_string())
    }

    /// Sends a chat line and checks it was acknowledged.
    pub fn say(&self, msg: &str) {
        let reply = self.post("/chat/send_msg/", &[("msg", msg)]).unwrap();
        assert_eq!(reply["status"], "ok", "{reply}");
    }

    /// The next message id.
    pub fn start(&self) -> u64 {
        let reply = self.get("/chat/start/").unwrap();
        reply["response"]
            .as_u64()
            .unwrap_or_else(|| panic!("{reply}"))
    }

    /// Every event in the session's mailbox, oldest first, read through
    /// waits from id 0 up to what /chat/start/ answers; panics on a gap
    /// or an answer that is not events.
    pub fn read_all(&self) -> Vec<Value> {
        let end = self.start();
        let mut events = Vec::new();
        let mut from = 0;
        while from < end {
            let reply = self.wait(from);
            assert!(reply.get("gap").is_none(), "a gap: {reply}");
            let batch = reply["response"]
                .as_array()
                .unwrap_or_else(|| panic!("not events: {reply}"));
            for event in batch {
                from = event["id"].as_u64().expect("an id") + 1;
                events.push(event.clone());
            }
        }
        events
    }

    /// One long poll from `from`.
    pub fn wait(&self, from: u64) -> Value {
        self.get(&format!("/chat/wait/?msg_id={from}")).unwrap()
    }
}

/// A fresh temporary data directory.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("data");
    (dir, path)
}
