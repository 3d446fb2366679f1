//! The operator's way into a running server: `natter backup` asks the
//! server for a consistent copy, because the server holds sled's lock and
//! nothing else may open the data directory meanwhile.
//!
//! At lift-off the server writes `natter-control` into the data directory
//! (mode 0600, so only the server's user can read it): the loopback
//! address and port it answers on and a fresh random token.
//! `POST /control/backup` answers only a request whose TCP peer is a
//! loopback address (the peer itself, never a header a proxy could fill
//! in) and that carries the token in `X-Natter-Token`, compared in
//! constant time. The body is the absolute path of the backup directory.
//! The file is removed at shutdown; one left by a crash names an address
//! nobody answers on, and is rewritten at the next start.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use rand::RngCore;
use rocket::fairing::AdHoc;
use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::serde::json::Json;
use rocket::State;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::room::Room;
use crate::store::{hex, CopyReport};

/// The control file's name inside the data directory.
pub const CONTROL_FILE: &str = "natter-control";

/// The header that carries the control token.
pub const TOKEN_HEADER: &str = "X-Natter-Token";

/// The path of the backup endpoint.
const BACKUP_PATH: &str = "/control/backup";

/// The token of this run, kept as managed state.
struct Token(String);

/// Mounts the backup endpoint and writes the control file at lift-off.
pub fn stage(data_dir: PathBuf) -> AdHoc {
    AdHoc::on_ignite("Control", move |rocket| async move {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = hex(&bytes);
        let file = data_dir.join(CONTROL_FILE);
        let remove = file.clone();
        rocket
            .manage(Token(token.clone()))
            .mount("/", routes![backup])
            .attach(AdHoc::on_liftoff("Control file", move |rocket| {
                let at =
                    reachable(rocket.config().address, rocket.config().port);
                Box::pin(async move { write_control_file(&file, at, &token) })
            }))
            .attach(AdHoc::on_shutdown("Remove control file", |_| {
                Box::pin(async move {
                    let _ = std::fs::remove_file(remove);
                })
            }))
    })
}

/// Where a local client reaches a server listening on `address`.
fn reachable(address: IpAddr, port: u16) -> SocketAddr {
    let ip = match address {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1])
        }
        ip => ip,
    };
    if !ip.is_loopback() {
        tracing::warn!(
            %ip,
            "the server listens on no loopback address, so `natter backup` \
             cannot reach it while it runs"
        );
    }
    SocketAddr::new(ip, port)
}

/// Writes the file under a temporary name first, so a reader never sees
/// half of it, and with mode 0600 from the start.
fn write_control_file(file: &Path, at: SocketAddr, token: &str) {
    use std::os::unix::fs::OpenOptionsExt;

    let partial = file.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| {
            write!(f, "address {at}\ntoken {token}\n")?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&partial, file));
    match written {
        Ok(()) => {
            tracing::info!(file = %file.display(), "control file written")
        }
        Err(e) => tracing::error!(
            file = %file.display(),
            error = %e,
            "cannot write the control file; `natter backup` will not reach \
             this server"
        ),
    }
}

/// Whether the request may use the control endpoint, and if not, why.
struct Operator(std::result::Result<(), &'static str>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Operator {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let expected = req.rocket().state::<Token>().map(|t| t.0.as_bytes());
        let given = req.headers().get_one(TOKEN_HEADER).map(str::as_bytes);
        let verdict = if !req.remote().is_some_and(|peer| is_loopback(&peer)) {
            Err("the control endpoint answers loopback peers only")
        } else {
            match (expected, given) {
                (Some(expected), Some(given))
                    if bool::from(expected.ct_eq(given)) =>
                {
                    Ok(())
                }
                _ => Err("missing or wrong control token"),
            }
        };
        Outcome::Success(Operator(verdict))
    }
}

/// A loopback address, also when written as an IPv4-mapped IPv6 one.
fn is_loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map_or(ip.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Copies every tree into the directory named by the body, with writers
/// paused, on a blocking thread.
#[post("/control/backup", data = "<dest>")]
async fn backup(
    operator: Operator,
    room: &State<Arc<Room>>,
    dest: String,
) -> (Status, Json<Value>) {
    if let Err(why) = operator.0 {
        tracing::warn!(why, "control request refused");
        return (Status::Forbidden, error_json(why));
    }
    let dest = PathBuf::from(dest.trim());
    if !dest.is_absolute() {
        return (
            Status::BadRequest,
            error_json("the backup path must be absolute"),
        );
    }

    let room = room.inner().clone();
    let target = dest.clone();
    let copied =
        tokio::task::spawn_blocking(move || room.store().backup_to(&target))
            .await;
    match copied {
        Ok(Ok(report)) => {
            tracing::info!(
                dest = %dest.display(),
                trees = report.trees,
                records = report.records,
                "backup written"
            );
            let response =
                json!({ "trees": report.trees, "records": report.records });
            (
                Status::Ok,
                Json(json!({"status": "ok", "response": response})),
            )
        }
        Ok(Err(e @ Error::Copy(_))) => {
            tracing::warn!(error = %e, "backup refused");
            (Status::BadRequest, error_json(&e.to_string()))
        }
        Ok(Err(e)) => {
            let dest = dest.display();
            tracing::error!(%dest, error = %e, "backup failed");
            (Status::ServiceUnavailable, error_json(&e.to_string()))
        }
        Err(e) => {
            tracing::error!(error = %e, "the backup thread failed");
            (Status::ServiceUnavailable, error_json("the backup failed"))
        }
    }
}

fn error_json(why: &str) -> Json<Value> {
    Json(json!({ "status": "error", "response": why }))
}

/// Asks the server running on `data_dir` to back itself up into `dest`
/// (made absolute here, since the server's working directory may differ).
pub fn request_backup(data_dir: &Path, dest: &Path) -> Result<CopyReport> {
    let dest = std::path::absolute(dest).map_err(|e| {
        Error::Copy(format!("cannot resolve {}: {e}", dest.display()))
    })?;
    let (at, token) = read_control_file(data_dir)?;
    let answer =
        post_local(at, &token, &dest.display().to_string()).map_err(|e| {
            Error::Copy(format!(
                "the data directory is locked, but no server answered at \
                 {at} ({e}); is another program holding it?"
            ))
        })?;
    let body: Value = serde_json::from_str(&answer).map_err(|_| {
        Error::Copy(format!("the server gave an unreadable answer: {answer}"))
    })?;
    if body["status"] != "ok" {
        let why = body["response"].as_str().unwrap_or("no reason given");
        return Err(Error::Copy(format!("the server refused: {why}")));
    }
    let count = |name: &str| body["response"][name].as_u64().unwrap_or(0);
    Ok(CopyReport {
        trees: count("trees") as usize,
        records: count("records"),
    })
}

fn read_control_file(data_dir: &Path) -> Result<(SocketAddr, String)> {
    let file = data_dir.join(CONTROL_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        Error::Copy(format!(
            "a server holds {} but its control file {} cannot be read ({e}); \
             run the backup as the server's user",
            data_dir.display(),
            file.display()
        ))
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(str::to_string)
    };
    let at = field("address").and_then(|a| a.parse().ok());
    match (at, field("token")) {
        (Some(at), Some(token)) => Ok((at, token)),
        _ => Err(Error::Copy(format!("{} is malformed", file.display()))),
    }
}

/// A one-shot HTTP/1.1 POST to the server; returns the body.
fn post_local(
    at: SocketAddr,
    token: &str,
    body: &str,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&at, Duration::from_secs(5))?;
    write!(
        stream,
        "POST {BACKUP_PATH} HTTP/1.1\r\nHost: {at}\r\n\
         {TOKEN_HEADER}: {token}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (_, body) = answer.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP body")
    })?;
    Ok(body.to_string())
}
