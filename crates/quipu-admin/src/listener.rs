//! The admin listener's connections, plaintext or TLS (`[admin.tls]`), admitted within
//! [`CONNECTIONS_MAX`] and [`CONNECTIONS_PER_ADDRESS_MAX`] by the same `ConnectionLimits` as
//! the client listeners (a TLS handshake runs in its own task, within the handshake timeout),
//! and handed to axum with the client's address.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use quipu_node::incoming::Admitted;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most connections the admin listener holds at once: scrapers, probes and browsers.
pub const CONNECTIONS_MAX: usize = 256;
/// Most connections from one address.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 64;

type Incoming<S> = Pin<Box<dyn Stream<Item = std::io::Result<Admitted<S>>> + Send>>;

/// Admitted connections as axum takes them.
pub(crate) struct AdmittedListener<S> {
    incoming: Incoming<S>,
    local: SocketAddr,
}

impl<S> AdmittedListener<S> {
    pub(crate) fn new(
        incoming: impl Stream<Item = std::io::Result<Admitted<S>>> + Send + 'static,
        local: SocketAddr,
    ) -> AdmittedListener<S> {
        AdmittedListener {
            incoming: Box::pin(incoming),
            local,
        }
    }
}

impl<S> axum::serve::Listener for AdmittedListener<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = Admitted<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted<S>, SocketAddr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(admitted)) => {
                    let peer = admitted.peer();
                    return (admitted, peer);
                }
                // The admitting streams retry failed accepts themselves and never end.
                Some(Err(_)) => {}
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection's client address, as handlers read it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

impl<S> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AdmittedListener<S>>>
    for Peer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AdmittedListener<S>>) -> Peer {
        Peer(*stream.remote_addr())
    }
}
