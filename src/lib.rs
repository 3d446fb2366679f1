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
//! - [`room`]: members, nicknames, chat, leaving and the idle sweep.
//! - [`sweeper`]: the fairing that runs the idle sweep.
//! - [`web`]: routes, guards, catchers and pages.
//! - [`control`]: the loopback-only endpoint `natter backup` talks to.
//! - [`config`], [`error`], [`logging`].

#[macro_use]
extern crate rocket;

pub mod config;
pub mod control;
pub mod error;
pub mod event;
pub mod logging;
pub mod mailbox;
pub mod room;
pub mod store;
pub mod sweeper;
pub mod web;

use std::sync::Arc;

use rocket::figment::Figment;
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
pub fn figment() -> Figment {
    rocket::Config::figment()
}

/// Natter's own settings out of a Figment.
pub fn settings(figment: &Figment) -> Result<Settings> {
    figment.extract().map_err(|e| Error::Config(e.to_string()))
}

/// Opens the data directory and builds the server from `figment`.
///
/// Fails, instead of starting empty, when the data directory cannot be
/// opened or read.
pub fn rocket(figment: Figment) -> Result<Rocket<Build>> {
    let figment = figment.join(("template_dir", DEFAULT_TEMPLATE_DIR));
    let settings = settings(&figment)?;
    tracing::info!(
        data_dir = %settings.data_path().display(),
        comet_timeout = settings.comet_timeout,
        max_idle = settings.max_idle,
        check_idle_interval = settings.check_idle_interval,
        mailbox_capacity = settings.mailbox_capacity,
        cache_capacity = settings.cache_capacity,
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
