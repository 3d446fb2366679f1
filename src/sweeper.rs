//! The background task that ends idle sessions.
//!
//! It starts when Rocket lifts off and stops when Rocket shuts down, so a
//! server that is not serving does not sweep.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::AdHoc;

use crate::room::Room;

/// A fairing that runs [`Room::sweep_idle`] every `interval`.
///
/// The task holds the room weakly, so dropping the server (as tests do)
/// closes the store without waiting for the task to notice the shutdown.
pub fn stage(room: &Arc<Room>, interval: Duration) -> AdHoc {
    let room = Arc::downgrade(room);
    AdHoc::on_liftoff("Idle sweeper", move |rocket| {
        let mut shutdown = rocket.shutdown();
        Box::pin(async move {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {
                            let Some(room) = room.upgrade() else { break };
                            sweep_once(&room).await;
                        }
                        _ = &mut shutdown => break,
                    }
                }
            });
        })
    })
}

async fn sweep_once(room: &Room) {
    match room.sweep_idle().await {
        Ok(0) => {}
        Ok(ended) => tracing::info!(ended, "idle sweep ended sessions"),
        Err(e) => tracing::error!(error = %e, "idle sweep failed"),
    }
}
