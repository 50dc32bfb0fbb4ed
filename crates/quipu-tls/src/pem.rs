//! Reading PEM files, and noticing that they changed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in the PEM file at `path` (at least one).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

/// The CA certificates of the PEM file at `path`, as trust anchors.
pub(crate) fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// What a set of files looked like when they were read: each one's modification time and
/// length (`None` for a file that could not be inspected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamps(Vec<Option<(SystemTime, u64)>>);

impl Stamps {
    pub(crate) fn of(files: &[&PathBuf]) -> Stamps {
        Stamps(
            files
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect(),
        )
    }
}

/// A configuration in use, with the stamps of the files it was read from: what new connections
/// get, replaced only by one that loaded.
#[derive(Debug)]
pub(crate) struct Current<T>(std::sync::RwLock<(std::sync::Arc<T>, Stamps)>);

impl<T> Current<T> {
    /// `load`s the configuration from `files` now.
    pub(crate) fn load(
        files: &[&PathBuf],
        load: impl FnOnce() -> Result<std::sync::Arc<T>, TlsError>,
    ) -> Result<Current<T>, TlsError> {
        let stamps = Stamps::of(files);
        Ok(Current(std::sync::RwLock::new((load()?, stamps))))
    }

    /// The configuration in use.
    pub(crate) fn get(&self) -> std::sync::Arc<T> {
        std::sync::Arc::clone(
            &self
                .0
                .read()
                .expect("TLS configuration lock poisoned by a panic")
                .0,
        )
    }

    /// Loads the configuration again if `files` changed since (or at once with `force`);
    /// returns whether it did. On an error the configuration in use stays.
    pub(crate) fn reload(
        &self,
        files: &[&PathBuf],
        force: bool,
        load: impl FnOnce() -> Result<std::sync::Arc<T>, TlsError>,
    ) -> Result<bool, TlsError> {
        let stamps = Stamps::of(files);
        let unchanged = self
            .0
            .read()
            .expect("TLS configuration lock poisoned by a panic")
            .1
            == stamps;
        if unchanged && !force {
            return Ok(false);
        }
        let config = load()?;
        *self
            .0
            .write()
            .expect("TLS configuration lock poisoned by a panic") = (config, stamps);
        Ok(true)
    }
}

/// `handshake`, failed with `TimedOut` past [`crate::HANDSHAKE_TIMEOUT`].
pub(crate) async fn within_timeout<S>(
    handshake: impl std::future::Future<Output = std::io::Result<S>>,
) -> std::io::Result<S> {
    match tokio::time::timeout(crate::HANDSHAKE_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the TLS handshake took too long",
        )),
    }
}
