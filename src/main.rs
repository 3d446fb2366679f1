//! The `natter` binary: parses the command line and launches the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    natter::logging::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
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
