//! The client API's accepted connections, bounded by [`ConnectionLimits`]: a connection beyond a
//! limit is closed at once; an admitted one holds its permit for as long as it is open.

use std::pin::Pin;
use std::task::{Context, Poll};

use quipu_node::{ConnectionLimits, ConnectionPermit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An admitted connection.
#[derive(Debug)]
pub(crate) struct Admitted {
    stream: TcpStream,
    _permit: ConnectionPermit,
}

/// Accepts connections from `listener` within `limits` (`ConnectionLimits::accept`).
pub(crate) fn admitted(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = std::io::Result<Admitted>> {
    futures_util::stream::unfold((listener, limits), |(listener, limits)| async move {
        let (stream, _, permit) = limits.accept(&listener, "client API").await;
        let admitted = Admitted {
            stream,
            _permit: permit,
        };
        Some((Ok(admitted), (listener, limits)))
    })
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
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
