//! The gRPC listener's accept loop: every connection is counted, bounded and, with TLS,
//! handshaken before tonic sees it.
//!
//! A connection must send its first byte (or finish its TLS handshake) within
//! `server.limits.handshake_timeout`, so sockets that never speak cannot pile up; at most
//! `max_connections` are open at once. Handshakes run in their own tasks, so a slow client
//! never holds up the next accept.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use super::tls::ReloadableTls;

/// What the accept loop needs to know.
#[derive(Clone)]
pub struct ListenerSettings {
    pub tls: Option<Arc<ReloadableTls>>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// `connections_open`, or a gauge nobody reads.
    pub gauge: Gauge,
    /// The server's tasks: the accept loop and each handshake run as one of them.
    pub tasks: TaskTracker,
}

/// A client connection, plain or TLS, counted while it is open.
pub struct Connection {
    stream: Stream,
    _open: OpenGuard,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Decrements the open-connection count when the connection is dropped.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Accepts connections until `stop`, handing each ready one to the returned stream.
pub fn incoming(
    listener: TcpListener,
    settings: ListenerSettings,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Connection>> {
    let (ready, receiver) = mpsc::channel(64);
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = settings.tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.fetch_add(1, Ordering::Relaxed) >= settings.max_connections {
                open.fetch_sub(1, Ordering::Relaxed);
                debug!("closing a connection: server.limits.max_connections are open");
                continue;
            }
            settings.gauge.inc();
            let guard = OpenGuard {
                open: open.clone(),
                gauge: settings.gauge.clone(),
            };
            let _ = tcp.set_nodelay(true);
            settings.tasks.spawn(handshake(
                tcp,
                guard,
                settings.clone(),
                ready.clone(),
                stop.clone(),
            ));
        }
    });
    ReceiverStream::new(receiver)
}

async fn handshake(
    tcp: TcpStream,
    guard: OpenGuard,
    settings: ListenerSettings,
    ready: mpsc::Sender<io::Result<Connection>>,
    stop: CancellationToken,
) {
    let opened = async {
        match &settings.tls {
            None => first_byte(&tcp).await.map(|()| Stream::Plain(tcp)),
            Some(tls) => tokio_rustls::TlsAcceptor::from(tls.current())
                .accept(tcp)
                .await
                .map(|tls| Stream::Tls(Box::new(tls))),
        }
    };
    let stream = tokio::select! {
        _ = stop.cancelled() => return,
        opened = tokio::time::timeout(settings.handshake_timeout, opened) => opened,
    };
    match stream {
        Ok(Ok(stream)) => {
            let connection = Connection {
                stream,
                _open: guard,
            };
            let _ = ready.send(Ok(connection)).await;
        }
        Ok(Err(error)) => debug!(%error, "a connection failed its handshake"),
        Err(_) => debug!("closing a connection that did not speak within handshake_timeout"),
    }
}

/// Waits until the client sends something (EOF counts as a failure).
async fn first_byte(tcp: &TcpStream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.stream {
            Stream::Plain(tcp) => tcp.connect_info(),
            Stream::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
