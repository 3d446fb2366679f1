//! Natter: a self-hosted web chat server that keeps every event on disk.
//!
//! People pick a nickname, join one shared room and receive every event
//! (joins, leaves, messages, notices) by HTTP long-polling. Everything
//! lives in one sled directory, so a restart loses nothing.
//!
//! The modules, from the disk up:
//!
//! - [`store`]: the only code that touches sled; keys, versioned values
//!   and the group-commit flusher.
//! - [`event`]: the events and their JSON shape.
//! - [`mailbox`]: each session's event queue, the post office that fills
//!   it, and the long-poll wait.
//! - [`history`]: the room's last chat lines, shown on joining.
//! - [`room`]: members, nicknames, chat, leaving and the idle sweep; its
//!   `moderation` part runs commands, bans and the per-host cap.
//! - [`command`]: parsing the commands typed in the chat box.
//! - [`limits`]: the rate limit, the wrong-password throttle and the
//!   constant-time password check, all in memory.
//! - [`sweeper`]: the fairing that runs the idle sweep.
//! - [`web`]: routes, guards, catchers and pages.
//! - [`control`]: the loopback-only endpoint `natter backup` talks to.
//! - [`config`], [`error`], [`logging`].

#[macro_use]
extern crate rocket;

pub mod command;
pub mod config;
pub mod control;
pub mod error;
pub mod event;
pub mod history;
pub mod limits;
pub mod logging;
pub mod mailbox;
pub mod room;
pub mod store;
pub mod sweeper;
pub mod web;

use std::sync::Arc;

use rocket::figment::providers::{Env, Format, Toml};
use rocket::figment::{Figment, Profile};
use rocket::{Build, Rocket};
use rocket_dyn_templates::Template;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::room::Room;

/// Where the page templates live unless `template_dir` says otherwise.
const DEFAULT_TEMPLATE_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/templates");

/// The configuration Natter reads by default: Rocket.toml, then the
/// `ROCKET_*` environment.
///
/// The same as Rocket's own, except that `ip_header` defaults to off: left
/// at Rocket's default, anyone could pick the address that bans and caps
/// see by sending `X-Real-IP`, even when Rocket.toml is not found.
pub fn figment() -> Figment {
    let file = Env::var_or("ROCKET_CONFIG", "Rocket.toml");
    let profile =
        Profile::from_env_or("ROCKET_PROFILE", rocket::Config::DEFAULT_PROFILE);
    Figment::from(rocket::Config::default())
        .merge((rocket::Config::IP_HEADER, false))
        .merge(Toml::file(file).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global())
        .select(profile)
}

/// Natter's own settings out of a Figment.
///
/// An empty `data_dir` is refused: sled would quietly put its files in
/// whatever folder the server was started from.
pub fn settings(figment: &Figment) -> Result<Settings> {
    let settings: Settings = figment
        .extract()
        .map_err(|e| Error::Config(e.to_string()))?;
    if settings.data_dir.original().as_os_str().is_empty() {
        return Err(Error::Config(
            "data_dir is empty; name the folder that holds the data".into(),
        ));
    }
    Ok(settings)
}

/// Opens the data directory and builds the server from `figment`.
///
/// Fails, instead of starting empty, when the data directory cannot be
/// opened or read.
pub fn rocket(figment: Figment) -> Result<Rocket<Build>> {
    let figment = figment.join(("template_dir", DEFAULT_TEMPLATE_DIR));
    let settings = settings(&figment)?;
    if let Some(origin) = &settings.public_origin {
        if web::origin_key(origin).is_none() {
            return Err(Error::Config(format!(
                "public_origin {origin:?} is not an origin such as \
                 https://chat.example.org"
            )));
        }
    }
    tracing::info!(
        data_dir = %settings.data_path().display(),
        comet_timeout = settings.comet_timeout,
        max_idle = settings.max_idle,
        check_idle_interval = settings.check_idle_interval,
        mailbox_capacity = settings.mailbox_capacity,
        cache_capacity = settings.cache_capacity,
        admin_password = if settings.admin_password_sha256.is_some() {
            "set"
        } else {
            "unset"
        },
        rate_limit_messages = settings.rate_limit_messages,
        rate_limit_window = settings.rate_limit_window,
        max_sessions_per_host = settings.max_sessions_per_host,
        secure_cookies = settings.secure_cookies,
        public_origin = settings.public_origin.as_deref().unwrap_or("(Host)"),
        history_on_join = settings.history_on_join,
        "natter settings"
    );
    let room = Room::open(&settings)?;
    Ok(build(figment, &settings, room))
}

/// Builds the server around a room that is already open.
pub fn build(
    figment: Figment,
    settings: &Settings,
    room: Arc<Room>,
) -> Rocket<Build> {
    let interval = settings.check_idle_interval();
    rocket::custom(figment)
        .manage(room.clone())
        .attach(Template::fairing())
        .attach(web::stage(settings))
        .attach(sweeper::stage(&room, interval))
        .attach(control::stage(settings.data_path()))
}
