//! Natter's load tool: drives a real server over real sockets and reports
//! delivery and fan-out latency.
//!
//! It starts the release binary on a temporary data directory (optionally
//! pinned to one core with `taskset`), logs in N listeners that keep a
//! long poll parked, and has S senders send M messages at a given total
//! rate (or as fast as acknowledgements return). Every message carries its
//! send time; listeners note when it arrives. The tool runs on one thread,
//! so pinning it to another core keeps it from stealing the server's.
//!
//! Run it with `cargo bench --bench load -- --help`; BENCHMARKS.md has the
//! commands behind each published figure.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// What to run.
#[derive(Parser, Debug, Clone)]
#[command(about = "Load test a Natter server over HTTP long-polling")]
struct Args {
    /// Listeners that park long polls.
    #[arg(long, default_value_t = 100)]
    listeners: usize,
    /// Sessions that send.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Total messages per second over all senders; 0 sends each next
    /// message as soon as the previous one is acknowledged.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pin the server to this CPU.
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Pin this tool to this CPU.
    #[arg(long)]
    client_cpu: Option<usize>,
    /// Only park the listeners, then report the server's memory and the
    /// fan-out time of one broadcast.
    #[arg(long)]
    park_only: bool,
    /// Repeat the run this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Logins in flight at once while setting up.
    #[arg(long, default_value_t = 32)]
    login_concurrency: usize,
    /// Restart mode: fill a data directory with `--listeners` sessions of
    /// `--messages` stored events each, stop the server, then time each of
    /// `--runs` launches until /chat/start/ answers.
    #[arg(long)]
    restart: bool,
    /// In restart mode, kill each timed server with SIGKILL (a crash)
    /// instead of SIGTERM, so every launch after the first recovers from a
    /// crash. The fill always ends with SIGTERM.
    #[arg(long)]
    crash: bool,
    /// A command to start the server under, split at spaces (for example
    /// "valgrind --tool=callgrind"); CPU and memory figures then describe
    /// the wrapper.
    #[arg(long)]
    wrap: Option<String>,
    /// Write the listeners' sessions straight into the data directory
    /// before the server starts, instead of logging them in over HTTP:
    /// each login announces itself to everyone already in, so N logins
    /// store about N*N/2 events, which takes minutes at N = 10,000.
    /// Seeded mailboxes start empty.
    #[arg(long)]
    seed: bool,
    /// Run even though this is a debug build (the server it starts is then
    /// a debug build too, and its figures mean nothing).
    #[arg(long)]
    allow_debug: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    if cfg!(debug_assertions) && !args.bench && !args.allow_debug {
        smoke_test(&args);
        return;
    }
    check_release_build(&args);
    let cores = cores();
    if let Some(cpu) = args.client_cpu {
        pin(std::process::id(), cpu);
    }
    warn_about_fd_limit(args.listeners + args.senders);

    let fsync_us = fsync_latency_us();
    println!(
        "machine: {cores} cores, fsync median {fsync_us} us, load average \
         {}; server {}",
        load_average(),
        server_binary().display()
    );
    if args.restart {
        restart::main(&args, fsync_us);
        return;
    }
    let mut reports = Vec::new();
    for run in 1..=args.runs {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let local = tokio::task::LocalSet::new();
        let mut report = local.block_on(&runtime, run_once(&args));
        report.load_average = load_average();
        println!("run {run}: {}", report.text());
        reports.push(report);
    }
    let median = Report::median(&reports);
    println!("median of {}: {}", reports.len(), median.text());
    let mut line = median.json(&args);
    line["fsync_median_us"] = json!(fsync_us);
    line["runs"] = json!(reports.len());
    line["load_average"] = json!(load_average());
    println!("{line}");
}

/// The server binary this tool starts: the one Cargo built beside it, so
/// `cargo bench` (release profile) runs the release server.
fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_natter"))
}

/// What `cargo test --all-targets` runs: a debug build started without
/// `--bench`. Its figures would mean nothing, so it only checks that the
/// tool and the server work together: a few listeners, a few messages,
/// and a failure if any delivery was lost, duplicated or out of order.
fn smoke_test(args: &Args) {
    let mut smoke = args.clone();
    smoke.listeners = 3;
    smoke.senders = 2;
    smoke.messages = 5;
    smoke.rate = 0.0;
    smoke.seed = false;
    smoke.park_only = false;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, run_once(&smoke));
    println!("smoke test against the debug server: {}", report.text());
    let exact = report.lost == 0
        && report.duplicated == 0
        && report.out_of_order == 0
        && report.acked == smoke.senders * smoke.messages;
    if !exact {
        eprintln!("error: the smoke test lost or mixed up deliveries");
        std::process::exit(1);
    }
    println!("for figures, run `cargo bench --bench load`");
}

/// Refuses to measure a debug build unless asked to: a debug build of
/// this tool starts the debug server, whose figures mean nothing.
fn check_release_build(args: &Args) {
    if cfg!(debug_assertions) && !args.allow_debug {
        eprintln!(
            "error: this is a debug build, so the server it would start ({}) \
             is one too; run it with `cargo bench --bench load -- ...` \
             (or pass --allow-debug)",
            server_binary().display()
        );
        std::process::exit(2);
    }
}

/// The machine's 1, 5 and 15 minute load averages, as `uptime` shows.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
struct Report {
    sessions: usize,
    acked: usize,
    send_seconds: f64,
    expected: usize,
    received: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    /// Fan-out latencies in microseconds, sorted.
    latencies: Vec<u64>,
    server_peak_rss_kb: u64,
    server_rss_kb: u64,
    server_cpu: f64,
    client_cpu: f64,
    /// Share of the run the server's threads were ready but waiting for a
    /// CPU, summed over its threads.
    server_wait: f64,
    /// Answers to the listeners' long polls that carried events.
    answers: usize,
    /// `/proc/loadavg` at the end of the run.
    load_average: String,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.acked as f64 / self.send_seconds.max(1e-9)
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[rank] as f64 / 1000.0
    }

    /// Which side limited the run. The server counts as CPU-bound when
    /// it ran or waited to run nearly all the time (the wait is summed
    /// over its threads, so it counts threads queued behind each other on
    /// one pinned core as well as other processes on that core).
    fn bottleneck(&self) -> &'static str {
        if self.server_cpu > 0.9 {
            "server CPU"
        } else if self.server_cpu + self.server_wait > 0.9 {
            "server CPU (it ran or waited for its core)"
        } else if self.client_cpu > 0.9 {
            "load tool CPU"
        } else {
            "neither CPU saturated (waiting on fsync or the network)"
        }
    }

    fn text(&self) -> String {
        format!(
            "sessions {} | acked {} in {:.2} s = {:.0} msg/s | deliveries \
             expected {} received {} lost {} dup {} out-of-order {} | \
             latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} | server \
             rss {} MB peak {} MB | cpu server {:.0}% (waited {:.0}%) tool \
             {:.0}% | {} answers, {:.1} events each | bottleneck: {} | \
             load {}",
            self.sessions,
            self.acked,
            self.send_seconds,
            self.throughput(),
            self.expected,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0),
            self.server_rss_kb / 1024,
            self.server_peak_rss_kb / 1024,
            self.server_cpu * 100.0,
            self.server_wait * 100.0,
            self.client_cpu * 100.0,
            self.answers,
            self.received as f64 / self.answers.max(1) as f64,
            self.bottleneck(),
            self.load_average,
        )
    }

    fn json(&self, args: &Args) -> Value {
        json!({
            "listeners": args.listeners,
            "senders": args.senders,
            "rate": args.rate,
            "size": args.size,
            "sessions": self.sessions,
            "acked": self.acked,
            "throughput_msg_s": self.throughput(),
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "p50_ms": self.percentile(0.5),
            "p90_ms": self.percentile(0.9),
            "p99_ms": self.percentile(0.99),
            "max_ms": self.percentile(1.0),
            "server_rss_mb": self.server_rss_kb as f64 / 1024.0,
            "server_peak_rss_mb": self.server_peak_rss_kb as f64 / 1024.0,
            "server_cpu": self.server_cpu,
            "client_cpu": self.client_cpu,
            "server_cpu_wait": self.server_wait,
            "answers": self.answers,
            "bottleneck": self.bottleneck(),
        })
    }

    /// A report whose every figure is the median over the runs (each
    /// latency percentile is the median of that percentile).
    fn median(reports: &[Report]) -> Report {
        let pick = |f: &dyn Fn(&Report) -> f64| -> f64 {
            let mut values: Vec<f64> = reports.iter().map(f).collect();
            values.sort_by(|a, b| a.total_cmp(b));
            values[values.len() / 2]
        };
        let mut median = reports[reports.len() / 2].clone();
        median.acked = pick(&|r| r.acked as f64) as usize;
        median.send_seconds =
            median.acked as f64 / pick(&|r| r.throughput()).max(1e-9);
        median.lost = pick(&|r| r.lost as f64) as usize;
        median.duplicated = pick(&|r| r.duplicated as f64) as usize;
        median.out_of_order = pick(&|r| r.out_of_order as f64) as usize;
        median.server_peak_rss_kb =
            pick(&|r| r.server_peak_rss_kb as f64) as u64;
        median.server_rss_kb = pick(&|r| r.server_rss_kb as f64) as u64;
        median.server_cpu = pick(&|r| r.server_cpu);
        median.server_wait = pick(&|r| r.server_wait);
        median.answers = pick(&|r| r.answers as f64) as usize;
        median.client_cpu = pick(&|r| r.client_cpu);
        // Rebuild a latency list whose percentiles are the medians.
        let points = [0.5, 0.9, 0.99, 1.0];
        let values: Vec<u64> = points
            .iter()
            .map(|p| (pick(&|r| r.percentile(*p)) * 1000.0) as u64)
            .collect();
        median.latencies = latency_list_with(&values);
        median
    }
}

/// A sorted list of 101 latencies whose p50, p90, p99 and max are the
/// given values.
fn latency_list_with(values: &[u64]) -> Vec<u64> {
    let mut list = vec![values[0]; 101];
    for slot in list.iter_mut().skip(51) {
        *slot = values[1];
    }
    for slot in list.iter_mut().skip(91) {
        *slot = values[2];
    }
    list[100] = values[3];
    list.sort_unstable();
    list
}

/// Starts a server, runs the scenario, stops the server.
async fn run_once(args: &Args) -> Report {
    let dir = tempfile::TempDir::new().expect("a temp dir");
    let data = dir.path().join("data");
    let seeded = match args.seed {
        true => Some(seed::sessions(&data, "l", args.listeners).await),
        false => None,
    };
    let server = ServerProcess::start(args, &data, &[]);
    let addr = server.addr;

    let setup = Instant::now();
    let senders =
        login_many(addr, "s", args.senders, args.login_concurrency).await;
    let listeners = match seeded {
        Some(cookies) => cookies,
        None => {
            login_many(addr, "l", args.listeners, args.login_concurrency).await
        }
    };
    println!(
        "set up {} sessions in {:.1} s{}",
        args.listeners + args.senders,
        setup.elapsed().as_secs_f64(),
        if args.seed { " (listeners seeded)" } else { "" }
    );
    let stats = Rc::new(RefCell::new(Stats::new(args.senders)));
    let mut tasks = Vec::new();
    let ready = Rc::new(RefCell::new(0usize));
    for cookie in listeners {
        let stats = stats.clone();
        let ready = ready.clone();
        tasks
            .push(tokio::task::spawn_local(listen(addr, cookie, stats, ready)));
    }
    while *ready.borrow() < args.listeners {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last polls reach the server and park.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut report = if args.park_only {
        park_only(args, &server, &senders, &stats).await
    } else {
        send_and_measure(args, &server, &senders, &stats).await
    };
    for task in tasks {
        task.abort();
    }
    report.sessions = args.listeners + args.senders;
    report
}

/// The 10k-parked scenario: memory with every poll parked, then the time
/// one broadcast takes to reach every listener.
async fn park_only(
    args: &Args,
    server: &ServerProcess,
    senders: &[String],
    stats: &Rc<RefCell<Stats>>,
) -> Report {
    let mut report = Report {
        server_rss_kb: server.rss_kb("VmRSS"),
        ..Report::default()
    };
    let mut conn = Conn::open(server.addr).await;
    let cpu_before = (server.cpu_seconds(), cpu_seconds(std::process::id()));
    let wait_before = server.wait_seconds();
    let started = Instant::now();
    let body = message(0, 0, args.size, stats.borrow().base);
    let sent = conn.send(&senders[0], &body).await;
    report.acked = usize::from(sent);
    report.expected = args.listeners;
    drain(stats, args.listeners, Duration::from_secs(30)).await;
    report.send_seconds = started.elapsed().as_secs_f64();
    let cpu_after = (server.cpu_seconds(), cpu_seconds(std::process::id()));
    report.server_cpu = (cpu_after.0 - cpu_before.0) / report.send_seconds;
    report.client_cpu = (cpu_after.1 - cpu_before.1) / report.send_seconds;
    report.server_wait =
        (server.wait_seconds() - wait_before) / report.send_seconds;
    finish(&mut report, server, stats);
    report
}

/// The main scenario: senders at a rate, listeners parked.
async fn send_and_measure(
    args: &Args,
    server: &ServerProcess,
    senders: &[String],
    stats: &Rc<RefCell<Stats>>,
) -> Report {
    let cpu_before = (server.cpu_seconds(), cpu_seconds(std::process::id()));
    let wait_before = server.wait_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, cookie) in senders.iter().enumerate() {
        let task = send_all(
            server.addr,
            cookie.clone(),
            index,
            args.clone(),
            stats.clone(),
        );
        tasks.push(tokio::task::spawn_local(task));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.unwrap_or(0);
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let cpu_after = (server.cpu_seconds(), cpu_seconds(std::process::id()));
    let server_wait = (server.wait_seconds() - wait_before) / send_seconds;

    let expected = acked * args.listeners;
    drain(stats, expected, Duration::from_secs(10)).await;
    let mut report = Report {
        acked,
        send_seconds,
        expected,
        server_rss_kb: server.rss_kb("VmRSS"),
        server_cpu: (cpu_after.0 - cpu_before.0) / send_seconds,
        client_cpu: (cpu_after.1 - cpu_before.1) / send_seconds,
        server_wait,
        ..Report::default()
    };
    finish(&mut report, server, stats);
    report
}

/// Copies the listeners' figures into the report.
fn finish(
    report: &mut Report,
    server: &ServerProcess,
    stats: &Rc<RefCell<Stats>>,
) {
    let stats = stats.borrow();
    report.received = stats.received;
    report.duplicated = stats.duplicated;
    report.out_of_order = stats.out_of_order;
    report.answers = stats.answers;
    report.lost = report
        .expected
        .saturating_sub(stats.received - stats.duplicated);
    report.latencies = stats.latencies.clone();
    report.latencies.sort_unstable();
    report.server_peak_rss_kb = server.rss_kb("VmHWM");
}

/// Waits until `expected` deliveries arrived or `limit` passed.
async fn drain(stats: &Rc<RefCell<Stats>>, expected: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let unique = {
            let s = stats.borrow();
            s.received - s.duplicated
        };
        if unique >= expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the listeners saw.
struct Stats {
    base: Instant,
    received: usize,
    duplicated: usize,
    out_of_order: usize,
    latencies: Vec<u64>,
    senders: usize,
    /// Poll answers that carried at least one chat message.
    answers: usize,
}

impl Stats {
    fn new(senders: usize) -> Stats {
        Stats {
            base: Instant::now(),
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            latencies: Vec::new(),
            senders,
            answers: 0,
        }
    }
}

/// One listener: start, then wait in a loop, checking every message.
async fn listen(
    addr: SocketAddr,
    cookie: String,
    stats: Rc<RefCell<Stats>>,
    ready: Rc<RefCell<usize>>,
) {
    let mut conn = Conn::open(addr).await;
    let start = conn.get_json("/chat/start/", &cookie).await;
    let mut next = start["response"].as_u64().expect("a start id");
    let senders = stats.borrow().senders;
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let mut last_seq = vec![None::<usize>; senders];
    *ready.borrow_mut() += 1;

    loop {
        let reply = conn
            .get_json(&format!("/chat/wait/?msg_id={next}"), &cookie)
            .await;
        let Some(events) = reply["response"].as_array() else {
            continue;
        };
        let now = Instant::now();
        let mut stats = stats.borrow_mut();
        if events.iter().any(|e| e["t"] == "chat_msg") {
            stats.answers += 1;
        }
        for event in events {
            next = event["id"].as_u64().unwrap_or(next) + 1;
            if event["t"] != "chat_msg" {
                continue;
            }
            let Some((sender, seq, sent_ns)) =
                parse_message(&event["d"]["msg"])
            else {
                continue;
            };
            stats.received += 1;
            if !seen.insert((sender, seq)) {
                stats.duplicated += 1;
                continue;
            }
            if last_seq[sender].is_some_and(|last| seq < last) {
                stats.out_of_order += 1;
            }
            last_seq[sender] = Some(seq);
            let arrived_ns = now.duration_since(stats.base).as_nanos() as u64;
            stats
                .latencies
                .push(arrived_ns.saturating_sub(sent_ns) / 1000);
        }
    }
}

/// One sender: M messages at its share of the rate.
async fn send_all(
    addr: SocketAddr,
    cookie: String,
    index: usize,
    args: Args,
    stats: Rc<RefCell<Stats>>,
) -> usize {
    let mut conn = Conn::open(addr).await;
    let base = stats.borrow().base;
    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.senders as f64 / args.rate));
    let offset =
        interval.map(|i| i.mul_f64(index as f64 / args.senders as f64));
    let started = tokio::time::Instant::now() + offset.unwrap_or_default();
    let mut acked = 0;
    for seq in 0..args.messages {
        if let Some(interval) = interval {
            tokio::time::sleep_until(started + interval * seq as u32).await;
        }
        let body = message(index, seq, args.size, base);
        if conn.send(&cookie, &body).await {
            acked += 1;
        }
    }
    acked
}

/// `sender:seq:sent_ns:` padded with x to `size` bytes.
fn message(sender: usize, seq: usize, size: usize, base: Instant) -> String {
    let sent_ns = base.elapsed().as_nanos();
    let mut text = format!("{sender}:{seq}:{sent_ns}:");
    while text.len() < size {
        text.push('x');
    }
    text
}

fn parse_message(msg: &Value) -> Option<(usize, usize, u64)> {
    let mut parts = msg.as_str()?.split(':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_ns = parts.next()?.parse().ok()?;
    Some((sender, seq, sent_ns))
}

/// Logs in `count` sessions named `prefix0`, `prefix1`, ..., a few at a
/// time, and returns their cookies.
async fn login_many(
    addr: SocketAddr,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Vec<String> {
    let mut cookies = vec![String::new(); count];
    let mut next = 0;
    while next < count {
        let batch = next..count.min(next + concurrency);
        next = batch.end;
        let logins = batch.map(|i| {
            let nick = format!("{prefix}{i}");
            async move { (i, login(addr, &nick).await) }
        });
        for (i, cookie) in futures_join_all(logins).await {
            cookies[i] = cookie;
        }
    }
    cookies
}

/// Runs futures concurrently on this thread and collects their outputs.
async fn futures_join_all<F: std::future::Future + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: 'static,
{
    let handles: Vec<_> = futures.map(tokio::task::spawn_local).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a login task"));
    }
    outputs
}

async fn login(addr: SocketAddr, nick: &str) -> String {
    let mut conn = Conn::open(addr).await;
    let (status, headers, body) = conn
        .request(Method::POST, "/login/", None, Some(format!("nick={nick}")))
        .await;
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next()?.strip_prefix("chat_sess="))
        .map(str::to_string);
    cookie.unwrap_or_else(|| {
        panic!(
            "login of {nick} refused ({status}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP handshake");
        tokio::task::spawn_local(connection);
        Conn { sender }
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        form: Option<String>,
    ) -> (hyper::StatusCode, hyper::HeaderMap, Bytes) {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(cookie) = cookie {
            builder = builder.header("cookie", format!("chat_sess={cookie}"));
        }
        if form.is_some() {
            builder = builder
                .header("content-type", "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(form.unwrap_or_default()));
        let request = builder.body(body).expect("a valid request");
        self.sender.ready().await.expect("the connection is open");
        let response =
            self.sender.send_request(request).await.expect("an answer");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a body").to_bytes();
        (parts.status, parts.headers, body)
    }

    async fn get_json(&mut self, path: &str, cookie: &str) -> Value {
        let (_, _, body) =
            self.request(Method::GET, path, Some(cookie), None).await;
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }

    /// Sends a chat line; true when acknowledged.
    async fn send(&mut self, cookie: &str, msg: &str) -> bool {
        let form = format!("msg={}", msg);
        let (_, _, body) = self
            .request(Method::POST, "/chat/send_msg/", Some(cookie), Some(form))
            .await;
        let reply: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        reply["status"] == "ok"
    }
}

/// The server under test.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// When the process was spawned.
    launched: Instant,
}

impl ServerProcess {
    /// Starts the server on `data` and waits until it accepts
    /// connections. `extra` adds `ROCKET_*` variables.
    fn start(args: &Args, data: &Path, extra: &[(&str, String)]) -> Self {
        let server = Self::spawn(args, data, extra);
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(server.addr).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        server
    }

    /// Starts the server without waiting for it.
    fn spawn(args: &Args, data: &Path, extra: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut words: Vec<String> = Vec::new();
        if let Some(cpu) = args.server_cpu {
            words.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        if let Some(wrap) = &args.wrap {
            words.extend(wrap.split_whitespace().map(str::to_string));
        }
        words.push(server_binary().display().to_string());
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("ROCKET_DATA_DIR", data)
            .env("ROCKET_PORT", port.to_string())
            .env("ROCKET_LOG_LEVEL", "critical")
            // Both keys are harmless where a server does not know them.
            .env("ROCKET_RATE_LIMIT_MESSAGES", "0")
            .env("ROCKET_MAX_SESSIONS_PER_HOST", "0")
            .env("ROCKET_MAX_IDLE", "3600")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (key, value) in extra {
            command.env(key, value);
        }
        let launched = Instant::now();
        let child = command.spawn().expect("the server starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        ServerProcess {
            child,
            addr,
            launched,
        }
    }

    fn rss_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!(
            "/proc/{}/status",
            self.child.id()
        ))
        .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Seconds the server's threads spent ready to run but waiting for a
    /// CPU, summed over threads (`/proc/PID/task/*/schedstat`).
    fn wait_seconds(&self) -> f64 {
        let tasks = format!("/proc/{}/task", self.child.id());
        let Ok(entries) = std::fs::read_dir(tasks) else {
            return 0.0;
        };
        let mut waited_ns = 0u64;
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path().join("schedstat"))
                .unwrap_or_default();
            let field = text.split_whitespace().nth(1);
            waited_ns += field.and_then(|v| v.parse().ok()).unwrap_or(0);
        }
        waited_ns as f64 / 1e9
    }

    /// Stops the server: SIGTERM and a wait (so it flushes, and a profiler
    /// wrapping it writes its output), or SIGKILL when `crash` is set.
    fn stop(&mut self, crash: bool) {
        let signal = if crash { "-KILL" } else { "-TERM" };
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(false);
        }
    }
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line.
    (ticks(11) + ticks(12)) / 100.0
}

fn pin(pid: u32, cpu: usize) {
    let status = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warning: could not pin the load tool to CPU {cpu}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn warn_about_fd_limit(sockets: usize) {
    let limits =
        std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<usize> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    // The tool and the server each hold one socket per session.
    if soft.is_some_and(|soft| soft < sockets + 100) {
        eprintln!(
            "warning: the open-file limit ({soft:?}) is too low for {sockets} \
             sessions; run `ulimit -n 65536` first"
        );
    }
}

/// The median time of a 4 KiB write plus fsync in the temp folder.
fn fsync_latency_us() -> u64 {
    use std::io::Write;
    let Ok(dir) = tempfile::TempDir::new() else {
        return 0;
    };
    let Ok(mut file) = std::fs::File::create(dir.path().join("probe")) else {
        return 0;
    };
    let block = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        if file
            .write_all(&block)
            .and_then(|_| file.sync_data())
            .is_err()
        {
            return 0;
        }
        times.push(started.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    times[times.len() / 2]
}

/// Restart mode: how long a server takes to answer after a launch on a
/// data directory that already holds many events.
mod restart {
    use super::*;

    /// Fills a directory, then times `--runs` launches on it.
    pub fn main(args: &Args, fsync_us: u64) {
        let dir = tempfile::TempDir::new().expect("a temp dir");
        let data = dir.path().join("data");
        let capacity = args.messages.max(1000);
        let extra = [("ROCKET_MAILBOX_CAPACITY", capacity.to_string())];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let local = tokio::task::LocalSet::new();

        let filling = Instant::now();
        let (cookie, stored) =
            local.block_on(&runtime, fill(args, &data, &extra, capacity));
        println!(
            "filled: {} sessions, {stored} stored events, {} MB on disk, \
             in {:.1} s",
            args.listeners,
            dir_size_kb(&data) / 1024,
            filling.elapsed().as_secs_f64()
        );

        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for run in 1..=args.runs {
            let mut server = ServerProcess::spawn(args, &data, &extra);
            let ms = local.block_on(&runtime, answered_after(&server, &cookie));
            let peak = server.rss_kb("VmHWM");
            server.stop(args.crash);
            println!(
                "restart {run}: launch to /chat/start/ {ms:.0} ms, server \
                 peak rss {} MB, load {}",
                peak / 1024,
                load_average()
            );
            times.push(ms);
            peaks.push(peak);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        peaks.sort_unstable();
        let median = times[times.len() / 2];
        println!(
            "median of {}: launch to /chat/start/ {median:.0} ms",
            times.len()
        );
        let line = json!({
            "mode": "restart",
            "sessions": args.listeners,
            "stored_events": stored,
            "stop": if args.crash { "SIGKILL" } else { "SIGTERM" },
            "disk_mb": dir_size_kb(&data) as f64 / 1024.0,
            "launch_to_start_ms": median,
            "launch_to_start_ms_runs": times,
            "server_peak_rss_mb": peaks[peaks.len() / 2] as f64 / 1024.0,
            "fsync_median_us": fsync_us,
            "runs": args.runs,
            "load_average": load_average(),
        });
        println!("{line}");
    }

    /// Logs in `--listeners` sessions and sends `--messages` messages, so
    /// every mailbox ends up holding `--messages` events (or the joins
    /// before them, up to `capacity`). Returns one session's cookie and the
    /// number of stored events, counted through the API.
    async fn fill(
        args: &Args,
        data: &Path,
        extra: &[(&str, String)],
        capacity: usize,
    ) -> (String, usize) {
        let mut server = ServerProcess::start(args, data, extra);
        let addr = server.addr;
        let cookies =
            login_many(addr, "r", args.listeners, args.login_concurrency).await;
        let senders = args.senders.clamp(1, cookies.len());
        let stats = Rc::new(RefCell::new(Stats::new(senders)));
        let mut plan = args.clone();
        plan.rate = 0.0;
        plan.senders = senders;
        plan.messages = args.messages / senders;
        let mut tasks = Vec::new();
        for (index, cookie) in cookies.iter().take(senders).enumerate() {
            let task = send_all(
                addr,
                cookie.clone(),
                index,
                plan.clone(),
                stats.clone(),
            );
            tasks.push(tokio::task::spawn_local(task));
        }
        for task in tasks {
            task.await.expect("a sender");
        }

        // Every id below a mailbox's next id was delivered, and the oldest
        // ones beyond `capacity` were dropped.
        let mut conn = Conn::open(addr).await;
        let mut stored = 0;
        for cookie in &cookies {
            let start = conn.get_json("/chat/start/", cookie).await;
            let next = start["response"].as_u64().expect("a start id");
            stored += (next as usize).min(capacity);
        }
        let kept = conn.get_json("/chat/wait/?msg_id=0", &cookies[0]).await;
        let kept = kept["response"].as_array().map_or(0, Vec::len);
        println!("one mailbox read from id 0 returned {kept} events");
        server.stop(false);
        (cookies[0].clone(), stored)
    }

    /// Milliseconds from the launch until /chat/start/ answers "ok" for a
    /// stored session.
    async fn answered_after(server: &ServerProcess, cookie: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(Instant::now() < deadline, "the server never answered");
            if TcpStream::connect(server.addr).await.is_ok() {
                let mut conn = Conn::open(server.addr).await;
                let reply = conn.get_json("/chat/start/", cookie).await;
                assert_eq!(reply["status"], "ok", "the stored session works");
                return server.launched.elapsed().as_secs_f64() * 1000.0;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Kilobytes of the files under `dir`.
    fn dir_size_kb(dir: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => stack.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total / 1024
    }
}

/// Sessions written straight into a data directory, for scenarios whose
/// logins over HTTP would take longer than the measurement itself.
mod seed {
    use std::path::Path;
    use std::sync::Arc;

    use natter::room::{hash_token, Room};
    use natter::store::{encode, head_key, ClientRecord, StoredClient};
    use rand::RngCore;

    /// Creates `count` sessions named `prefix0`, `prefix1`, ... as if they
    /// had logged in from 127.0.0.1, and returns their cookie tokens.
    pub async fn sessions(
        data: &Path,
        prefix: &str,
        count: usize,
    ) -> Vec<String> {
        let mut settings = natter::config::Settings::default();
        settings.data_dir = data.to_path_buf().into();
        let room = Room::open(&settings).expect("the data directory opens");
        let mut tokens = Vec::with_capacity(count);
        let mut pending = Vec::new();
        for i in 0..count {
            let token = new_token();
            let nick = format!("{prefix}{i}");
            pending.push(tokio::task::spawn_local(create(
                room.clone(),
                nick,
                hash_token(&token),
            )));
            tokens.push(token);
            if pending.len() == 256 || i + 1 == count {
                for task in pending.drain(..) {
                    task.await.expect("a seeding task");
                }
            }
        }
        drop(room);
        tokens
    }

    async fn create(room: Arc<Room>, nick: String, token_hash: [u8; 32]) {
        let store = room.store();
        let session = store.new_session_id().expect("a session id");
        let record = ClientRecord {
            nick,
            host: "127.0.0.1".into(),
            token_hash,
            admin: false,
            ended: None,
        };
        let value = encode(&StoredClient::V1(record)).expect("encodable");
        {
            let _writing = store.writing();
            store
                .clients
                .insert(head_key(session), value)
                .expect("a client record is written");
        }
        room.post_office()
            .create(session)
            .await
            .expect("a mailbox is created");
    }

    fn new_token() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
