//! The `natter` binary: parses the command line and launches the server,
//! or takes or restores a backup of its data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use natter::error::Error;
use natter::store::CopyReport;

/// A self-hosted web chat server that keeps every event on disk.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Write a consistent copy of the data directory into DEST, a new or
    /// empty directory. A running server is asked to make it (writers
    /// pause meanwhile); otherwise the directory is read directly.
    Backup { dest: PathBuf },
    /// Fill the empty data directory from a backup made by `backup` (or a
    /// copy of a stopped server's directory). The server must be stopped.
    Restore { src: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    natter::logging::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Backup { dest } => copy("backup", |data| backup(data, &dest)),
        Command::Restore { src } => {
            copy("restore", |data| natter::store::restore(&src, data))
        }
    }
}

/// Runs a backup or restore against the configured data directory and
/// reports what it copied.
fn copy(
    what: &str,
    run: impl FnOnce(&Path) -> natter::error::Result<CopyReport>,
) -> ExitCode {
    let data = match natter::settings(&natter::figment()) {
        Ok(settings) => settings.data_path(),
        Err(e) => {
            eprintln!("natter: {what} failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&data) {
        Ok(report) => {
            println!(
                "natter: {what} done: {} records in {} trees",
                report.records, report.trees
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("natter: {what} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a stopped server's directory directly; asks a running one. Both
/// refuse a target inside the data directory.
fn backup(data: &Path, dest: &Path) -> natter::error::Result<CopyReport> {
    match natter::store::backup_stopped(data, dest) {
        Err(Error::Locked(_)) => natter::control::request_backup(data, dest),
        other => other,
    }
}

fn serve() -> ExitCode {
    let figment = natter::figment();
    let rocket = match natter::rocket(figment) {
        Ok(rocket) => rocket,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("natter: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Rocket's own runtime, sized by its `workers` setting.
    match rocket::execute(rocket.launch()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            eprintln!("natter: {e}");
            ExitCode::FAILURE
        }
    }
}
