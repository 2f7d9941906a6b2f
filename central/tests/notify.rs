//! systemd `Type=notify` for the `store` role: READY=1 at start (the worker
//! then waits for Redis and PostgreSQL with backoff: here neither answers),
//! WATCHDOG=1 at half of `$WATCHDOG_USEC`, STOPPING=1 on SIGTERM, exit 0.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("no notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn store_role_notifies_ready_watchdog_and_stopping() {
    let name = format!("bulkflow-central-notify-test-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
        .arg("store")
        // Nothing listens on port 9: the worker keeps retrying.
        .env("BULKFLOW_CENTRAL_REDIS_URL", "redis://127.0.0.1:9")
        .env(
            "BULKFLOW_CENTRAL_POSTGRES_URL",
            "host=127.0.0.1 port=9 user=x",
        )
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "off")
        .spawn()
        .unwrap();

    let ready = next(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert_eq!(next(&sock), "WATCHDOG=1");
    assert_eq!(next(&sock), "WATCHDOG=1");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = loop {
        let m = next(&sock);
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(child.wait().unwrap().success());
}
