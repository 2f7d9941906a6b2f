//! Graceful shutdown: one signal (SIGINT or SIGTERM) that every role watches;
//! each finishes what it holds (an HTTP request, a transaction) and returns.

use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A shutdown triggered by SIGINT or SIGTERM.
    pub fn on_signals() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        let shutdown = Shutdown {
            tx: Arc::new(tx),
            rx,
        };
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            on_signal.trigger();
        });
        shutdown
    }

    /// Requests shutdown from inside: a role that failed stops the others.
    pub fn trigger(&self) {
        // Told before any role starts stopping, so systemd hears it even when
        // the process then exits at once (a task sending it could be dropped
        // with the runtime before it ran).
        bulkflow_shared::notify::stopping();
        let _ = self.tx.send(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been requested.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
