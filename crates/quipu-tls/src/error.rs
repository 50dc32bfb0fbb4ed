//! What can go wrong loading TLS files.

use std::path::PathBuf;

/// A TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read PEM file {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("cannot trust the CA certificates of {path}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the certificate and key (a key that does not match the certificate, say).
    #[error("the certificate {cert} and key {key} do not make a TLS configuration")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The verifier of client certificates could not be built.
    #[error("cannot verify client certificates with the CA of {path}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// Client certificates are asked for but no CA is configured to verify them.
    #[error("client certificates need a CA file (ca_file) to verify them")]
    NoCa,
    /// A client certificate without its key, or a key without its certificate.
    #[error("a client certificate needs both cert_file and key_file")]
    HalfIdentity,
    /// A throwaway certificate could not be made or written.
    #[error("cannot make a development certificate")]
    Generate(#[source] rcgen::Error),
    /// A throwaway certificate could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
