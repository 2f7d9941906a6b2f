//! systemd `Type=notify`: the real binary under a fake `$NOTIFY_SOCKET` (an
//! abstract socket, as systemd may use) sends READY=1 once listening,
//! WATCHDOG=1 at half of `$WATCHDOG_USEC`, and STOPPING=1 on SIGTERM.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("no notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_watchdog_and_stopping_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "edge_id = \"notify\"\nlisten = \"127.0.0.1:0\"\ncentral_url = \"http://127.0.0.1:9\"\n\
             [outbox]\npath = \"{}\"\n",
            dir.path().join("outbox.db").display()
        ),
    )
    .unwrap();
    let name = format!("bulkflow-edge-notify-test-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr_file = dir.path().join("addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();

    let ready = next(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains("STATUS=listening on 127.0.0.1:"),
        "{ready:?}"
    );
    // READY comes after the listener is bound: the address is already known.
    assert!(addr_file.exists());

    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(&sock), "WATCHDOG=1");
    }
    // Three pings at 100 ms (half of WATCHDOG_USEC): well under a second.
    assert!(started.elapsed() < Duration::from_secs(5));

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
