//! The accepted connections of a listener (the Raft transport, the client API, the admin
//! listener), bounded by
//! [`ConnectionLimits`]: a connection beyond a limit is closed at once; an admitted one holds its
//! permit for as long as it is open, its TLS handshake included. With TLS, handshakes run
//! concurrently, each within [`quipu_tls::HANDSHAKE_TIMEOUT`], so that a slow or silent client
//! never holds up the next connection; a failed handshake is logged and closes only its own
//! connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::{ConnectionLimits, ConnectionPermit};

/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// An admitted connection: a TCP stream, or a TLS stream over one.
#[derive(Debug)]
pub struct Admitted<S> {
    stream: S,
    peer: std::net::SocketAddr,
    _permit: ConnectionPermit,
}

impl<S> Admitted<S> {
    /// The client's address and port.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }
}

/// Accepts plaintext connections from `listener` within `limits`.
pub fn admitted(
    listener: TcpListener,
    limits: ConnectionLimits,
    what: &'static str,
) -> impl Stream<Item = std::io::Result<Admitted<TcpStream>>> {
    futures_util::stream::unfold((listener, limits), move |(listener, limits)| async move {
        let (stream, peer, permit) = limits.accept(&listener, what).await;
        let admitted = Admitted {
            stream,
            peer,
            _permit: permit,
        };
        Some((Ok(admitted), (listener, limits)))
    })
}

/// Accepts TLS connections from `listener` within `limits`: each handshake runs in its own task,
/// and only connections whose handshake succeeded are handed on.
pub fn admitted_tls(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Arc<quipu_tls::ServerTls>,
    what: &'static str,
) -> impl Stream<Item = std::io::Result<Admitted<TlsStream<TcpStream>>>> {
    let (ready, mut taken) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let (stream, peer, permit) = tokio::select! {
                accepted = limits.accept(&listener, what) => accepted,
                () = ready.closed() => return,
            };
            let tls = Arc::clone(&tls);
            let ready = ready.clone();
            tokio::spawn(async move {
                match tls.accept(stream).await {
                    Ok(stream) => {
                        let _ = ready
                            .send(Ok(Admitted {
                                stream,
                                peer,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(listener = what, %peer, error = &e as &dyn std::error::Error, "TLS handshake failed");
                    }
                }
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| taken.poll_recv(cx))
}

impl<S: Connected> Connected for Admitted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
