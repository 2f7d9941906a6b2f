//! systemd `Type=notify` glue (the protocol is in `bulkflow_shared::notify`;
//! nothing happens without `$NOTIFY_SOCKET`). READY is sent where a role is
//! ready: `serve`/`run` once the listener is bound, `store` once the worker
//! starts (it then waits for Redis and PostgreSQL by itself, with backoff).

use crate::shutdown::Shutdown;
use bulkflow_shared::notify;

/// WATCHDOG pings from this runtime (a hung runtime misses them and systemd
/// restarts the service), until shutdown ([`Shutdown::trigger`] sends STOPPING).
pub fn watchdog(mut shutdown: Shutdown) {
    let mut tick = notify::watchdog_interval().map(tokio::time::interval);
    tokio::spawn(async move {
        loop {
            let ping = async {
                match tick.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ping => notify::watchdog_ping(),
                _ = shutdown.wait() => break,
            }
        }
    });
}
