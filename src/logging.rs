//! The one logger: `tracing`, which also carries Rocket's own `log`
//! records.
//!
//! The level comes from `RUST_LOG` (default `info`). Rocket's logger is
//! not installed because ours is set first.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; a second call does nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
