//! systemd service notifications (`sd_notify(3)`), for `Type=notify` units.
//!
//! A few lines over a Unix datagram socket instead of a crate: the protocol is
//! one datagram of `KEY=VALUE` lines sent to `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`), and it must build for every
//! router target (no 64-bit atomics on MIPS). Without `$NOTIFY_SOCKET` (not
//! started by systemd, or on OpenWrt's procd) every call does nothing.
//!
//! The binaries send `READY=1` once their listeners are bound, `WATCHDOG=1`
//! every [`watchdog_interval`] from their async runtime (so a hung runtime
//! stops the pings and systemd restarts the service), and `STOPPING=1` when a
//! shutdown signal arrives.

use std::ffi::OsStr;
use std::time::Duration;

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`. Returns whether a
/// notification was sent; errors are returned, never panics. Callers usually
/// ignore both: a failed notification must not stop the service.
pub fn notify(state: &str) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => send_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// `READY=1` with a human-readable `STATUS=` line (shown by `systemctl status`).
pub fn ready(status: &str) {
    let _ = notify(&format!("READY=1\nSTATUS={status}"));
}

/// `STOPPING=1`: shutdown has begun (in-flight work is finishing).
pub fn stopping() {
    let _ = notify("STOPPING=1\nSTATUS=stopping");
}

/// `WATCHDOG=1`: the service is alive.
pub fn watchdog_ping() {
    let _ = notify("WATCHDOG=1");
}

/// How often to send [`watchdog_ping`]: half of `$WATCHDOG_USEC` (systemd's
/// advice), or `None` when no watchdog is configured for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

/// The rule behind [`watchdog_interval`], without the environment.
/// `WATCHDOG_PID`, when set, names the process the watchdog is meant for.
pub fn watchdog_interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    let usec = usec.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Sends one datagram to the socket named like `$NOTIFY_SOCKET`.
#[cfg(target_os = "linux")]
pub fn send_to(socket: &OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = socket.as_bytes();
    let addr = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Only Linux has systemd: elsewhere there is nothing to notify.
#[cfg(not(target_os = "linux"))]
pub fn send_to(_socket: &OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("bulkflow-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=ok");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("bulkflow-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        assert!(send_to(OsStr::new("/nonexistent/bulkflow.sock"), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_this_pid() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from("30000000", None, 7), half);
        assert_eq!(watchdog_interval_from("30000000", Some("7"), 7), half);
        assert_eq!(watchdog_interval_from("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_from("0", None, 7), None);
        assert_eq!(watchdog_interval_from("x", None, 7), None);
    }
}
