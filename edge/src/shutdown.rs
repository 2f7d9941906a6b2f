//! Graceful shutdown: one signal, watched by every task.
//!
//! SIGINT or SIGTERM flips a watch channel. Listeners stop accepting and let
//! in-flight requests finish (their reports are committed before they are
//! answered); the forwarder stops between requests; once every outbox handle
//! is dropped the writer commits what it still holds and checkpoints the WAL.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown has been requested.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// A shutdown signal and the task that fires it on SIGINT/SIGTERM.
pub fn on_signals() -> Shutdown {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        // systemd hears STOPPING before anything stops, so it is sent even if
        // the process then exits at once.
        bulkflow_shared::notify::stopping();
        let _ = tx.send(true);
    });
    Shutdown(rx)
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
