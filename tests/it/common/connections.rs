//! Client connections below gRPC, for the listener's bounds: sockets that never send a byte,
//! HTTP/2 spoken by hand (to answer or ignore the server's keepalive PINGs), and the file
//! descriptor limit that thousands of sockets need.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Raises this process's open-file limit to at least `wanted` (children inherit it), or fails
/// saying why: the hard limit is the most an unprivileged process may ask for.
pub fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted && limit.rlim_max >= wanted {
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= wanted,
        "this test needs {wanted} open files; the hard limit is {} (ulimit -Hn)",
        limit.rlim_max
    );
}

/// `count` TCP connections to `address` that never send a byte.
pub async fn idle_sockets(address: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let socket = TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("opening idle connection {i} of {count}: {e}"));
        sockets.push(socket);
    }
    sockets
}

/// When the server closed `socket` (EOF or reset), reading and dropping anything it sends;
/// `None` if it is still open after `within`.
pub async fn closed_by_server(socket: &mut TcpStream, within: Duration) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;

/// An HTTP/2 client connection that has sent the preface and its SETTINGS and then opens no
/// stream: an idle client, as KEDA's long-lived connection is between polls.
pub struct Http2Connection {
    socket: TcpStream,
}

/// What the server did while a connection was held.
#[derive(Debug, Default)]
pub struct Held {
    /// PINGs the server sent (keepalive).
    pub pings: usize,
    pub goaway: bool,
    /// When the server closed the connection, counted from the start of the hold.
    pub closed_after: Option<Duration>,
}

impl Http2Connection {
    pub async fn open(address: SocketAddr) -> Http2Connection {
        let mut socket = TcpStream::connect(address).await.expect("connecting");
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        socket
            .write_all(&frame(FRAME_SETTINGS, 0, &[]))
            .await
            .unwrap();
        Http2Connection { socket }
    }

    /// Reads the server's frames for `duration` (or until it closes the connection),
    /// acknowledging its SETTINGS, and its PINGs when `answer_pings`.
    pub async fn hold(&mut self, duration: Duration, answer_pings: bool) -> Held {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + duration;
        let mut held = Held::default();
        loop {
            let mut header = [0u8; 9];
            match tokio::time::timeout_at(deadline, self.socket.read_exact(&mut header)).await {
                Err(_) => return held,
                Ok(Err(_)) => {
                    held.closed_after = Some(started.elapsed());
                    return held;
                }
                Ok(Ok(_)) => {}
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let mut payload = vec![0u8; length];
            if self.socket.read_exact(&mut payload).await.is_err() {
                held.closed_after = Some(started.elapsed());
                return held;
            }
            let answer = match kind {
                FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                    Some(frame(FRAME_SETTINGS, FLAG_ACK, &[]))
                }
                FRAME_PING if flags & FLAG_ACK == 0 => {
                    held.pings += 1;
                    answer_pings.then(|| frame(FRAME_PING, FLAG_ACK, &payload))
                }
                FRAME_GOAWAY => {
                    held.goaway = true;
                    None
                }
                _ => None,
            };
            if let Some(answer) = answer
                && self.socket.write_all(&answer).await.is_err()
            {
                held.closed_after = Some(started.elapsed());
                return held;
            }
        }
    }
}

/// A frame on stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 0];
    bytes.extend_from_slice(payload);
    bytes
}
