//! The server side: a listener's TLS configuration, reloaded when its files change.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::pem::{self, Current, within_timeout};
use crate::{Reload, TlsError};

/// Whether a listener asks its clients for certificates (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one (verified against the CA if it does).
    Requested,
    /// Every client must present one the CA signed.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "client_auth {other:?} is not one of \"none\", \"requested\", \"required\""
            )),
        }
    }
}

/// A listener's PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The listener's certificate chain (its own certificate first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs client certificates (needed unless `client_auth` is none).
    pub ca: Option<PathBuf>,
}

/// A listener's TLS: what new connections are accepted with.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerFiles,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
    current: Current<ServerConfig>,
}

impl ServerTls {
    /// Loads `files`; `alpn`: the application protocols offered (`h2` for gRPC, none for
    /// Kafka).
    pub fn new(
        files: ServerFiles,
        client_auth: ClientAuth,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerTls>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let current = Current::load(&Self::watched(&files), || {
            Self::load(&files, client_auth, &alpn)
        })?;
        Ok(Arc::new(ServerTls {
            files,
            client_auth,
            alpn,
            current,
        }))
    }

    fn watched(files: &ServerFiles) -> Vec<&PathBuf> {
        [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    fn load(
        files: &ServerFiles,
        client_auth: ClientAuth,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = pem::certificates(&files.cert)?;
        let key = pem::private_key(&files.key)?;
        let builder = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            })?;
        let builder = match (client_auth, &files.ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err(TlsError::NoCa),
            (auth, Some(ca)) => {
                let roots = Arc::new(pem::roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, crate::provider());
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                    path: ca.clone(),
                    source,
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::Config {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    source,
                })?;
        config.alpn_protocols = alpn.to_vec();
        // The server's order of cipher suites, not the client's (OpenSSL and rustls clients put
        // AES-256-GCM first): `provider`'s AES-128-GCM whenever the client offers it.
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }

    /// Whether clients must present a certificate.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.get()
    }

    /// Runs the TLS handshake on an accepted connection, within [`crate::HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        within_timeout(acceptor.accept_with(stream, |connection| {
            connection.set_buffer_limit(Some(crate::SEND_BUFFER_BYTES));
        }))
        .await
    }
}

impl Reload for ServerTls {
    fn reload(&self, force: bool) -> Result<bool, TlsError> {
        self.current.reload(&Self::watched(&self.files), force, || {
            Self::load(&self.files, self.client_auth, &self.alpn)
        })
    }
}
