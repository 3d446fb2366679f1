//! The one logger: `tracing`, which also carries Rocket's own `log`
//! records.
//!
//! The level comes from `RUST_LOG`. The default is `info` for everything
//! but Rocket's per-request records, which are `warn`: an operator wants
//! the start-up configuration, joins and leaves, not four lines for every
//! long poll. Rocket's logger is not installed because ours is set first.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,rocket::server=warn";

/// Installs the subscriber; a second call does nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
