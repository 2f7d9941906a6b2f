//! HTTPS for CPEs: the listener serves TLS (rustls, ring) from PEM files.
//! The certificate is made with the `openssl` command line tool.

mod common;

use common::*;
use std::process::Command;

#[test]
fn https_listener_accepts_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is needed for this test");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let edge = Edge::start(
        dir.path(),
        &dead_central(),
        &format!(
            "[forward]\nbatch_max_age_ms = 3600000\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(&cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/bulkdata?oui=0A1B2C&sn=T1",
        edge.addr.port()
    );
    let status = rt.block_on(async {
        client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(nvp_body(42, 4))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 200);
    let stored: Vec<u64> = outbox_reports(&edge.db).iter().map(test_id).collect();
    assert_eq!(stored, vec![42]);
    // Plain HTTP on the TLS port gets no answer, and the server keeps working.
    assert!(try_request(edge.addr, "/bulkdata?oui=0A1B2C&sn=T1", b"{}").is_none());
}
