//! Listening sockets for the binaries' HTTP servers.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked of the kernel (Linux caps it at
/// `net.core.somaxconn`, 4096 by default). CPEs whose periodic reports line
/// up connect all at once; with the default of `TcpListener::bind` (128, as
/// std's), 1,000 CPEs connecting together saw connection resets and 1 s SYN
/// retransmits while the limit of connections in service was reached.
pub const BACKLOG: u32 = 4096;

/// Binds and listens on `addr` with [`BACKLOG`]. Call inside a Tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted service can bind again at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
