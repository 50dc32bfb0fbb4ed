//! The client side: the CA a connection trusts and, for mutual TLS, the certificate it
//! presents; a tonic connector over it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

use crate::pem::{self, Current, within_timeout};
use crate::{Reload, TlsError};

/// A client's PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// The CA whose certificates the client trusts.
    pub ca: PathBuf,
    /// The client's own certificate chain, for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
}

/// A client's TLS: what new connections are made with.
#[derive(Debug)]
pub struct ClientTls {
    files: ClientFiles,
    alpn: Vec<Vec<u8>>,
    current: Current<ClientConfig>,
}

impl ClientTls {
    /// Loads `files`; `alpn`: the application protocols asked for (`h2` for gRPC).
    pub fn new(files: ClientFiles, alpn: &[&[u8]]) -> Result<Arc<ClientTls>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let current = Current::load(&Self::watched(&files), || Self::load(&files, &alpn))?;
        Ok(Arc::new(ClientTls {
            files,
            alpn,
            current,
        }))
    }

    /// The configuration a command's `--tls-ca`, `--tls-cert` and `--tls-key` ask for: none
    /// without a CA.
    pub fn from_options(
        ca: Option<&PathBuf>,
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
        alpn: &[&[u8]],
    ) -> Result<Option<Arc<ClientTls>>, TlsError> {
        let Some(ca) = ca else {
            return Ok(None);
        };
        let files = ClientFiles {
            ca: ca.clone(),
            cert: cert.cloned(),
            key: key.cloned(),
        };
        ClientTls::new(files, alpn).map(Some)
    }

    fn watched(files: &ClientFiles) -> Vec<&PathBuf> {
        [Some(&files.ca), files.cert.as_ref(), files.key.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    fn load(files: &ClientFiles, alpn: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = pem::roots(&files.ca)?;
        let config_error = |source| TlsError::Config {
            cert: files.cert.clone().unwrap_or_default(),
            key: files.key.clone().unwrap_or_default(),
            source,
        };
        let builder = ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots);
        let mut config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)
                .map_err(config_error)?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfIdentity),
        };
        config.alpn_protocols = alpn.to_vec();
        Ok(Arc::new(config))
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.current.get()
    }

    /// Opens a TLS connection to `host:port`, checking that the server's certificate names
    /// `host` (a DNS name or an IP address), within [`crate::HANDSHAKE_TIMEOUT`] for the handshake.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host} is not a server name: {e}"),
            )
        })?;
        let tcp = TcpStream::connect((bare, port)).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(self.config());
        within_timeout(connector.connect_with(name, tcp, |connection| {
            connection.set_buffer_limit(Some(crate::SEND_BUFFER_BYTES));
        }))
        .await
    }
}

impl Reload for ClientTls {
    fn reload(&self, force: bool) -> Result<bool, TlsError> {
        self.current.reload(&Self::watched(&self.files), force, || {
            Self::load(&self.files, &self.alpn)
        })
    }
}

/// A tonic connector over [`ClientTls`]: give it to `Endpoint::connect_with_connector*` with an
/// `http://HOST:PORT` endpoint (tonic then speaks HTTP/2 over the TLS stream this makes). Each
/// new connection uses the certificates in effect when it is made.
#[derive(Debug, Clone)]
pub struct Connector(pub Arc<ClientTls>);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = Arc::clone(&self.0);
        Box::pin(async move {
            let invalid = || {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{uri} names no host and port"),
                )
            };
            let host = uri.host().ok_or_else(invalid)?;
            let port = uri.port_u16().ok_or_else(invalid)?;
            Ok(TokioIo::new(tls.connect(host, port).await?))
        })
    }
}
