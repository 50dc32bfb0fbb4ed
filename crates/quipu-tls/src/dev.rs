//! Throwaway certificates for trying the secure setup (`quipu dev --tls`) and for tests: a CA
//! made on the spot, node certificates naming their node id and addresses, and client
//! certificates. Never for production: the CA's key lies beside the certificates, unprotected.
//! `deploy/README.md` says how to make real ones.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{TlsError, node_name};

/// A certificate authority made on the spot.
#[derive(Debug)]
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now on, for years.
    Current,
    /// It expired in 2020 (to test that expired certificates are refused).
    Expired,
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn new() -> Result<DevCa, TlsError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Quipu development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(TlsError::Generate)?;
        Ok(DevCa { issuer })
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), with the common name
    /// `common_name`, usable by servers and clients.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        validity: Validity,
    ) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(TlsError::Generate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::Generate)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `names` (common name `stem`) and writes it and its key as
    /// `dir/stem.pem` and `dir/stem.key`; returns their paths.
    pub fn issue_files(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        validity: Validity,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let issued = self.issue(stem, &names, validity)?;
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        write(&cert, &issued.cert_pem, false)?;
        write(&key, &issued.key_pem, true)?;
        Ok((cert, key))
    }

    /// A node's certificate: its node name ([`node_name`]) and the hosts peers and clients
    /// reach it at.
    pub fn issue_node(&self, id: u64, hosts: &[&str]) -> Result<Issued, TlsError> {
        let mut names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        names.push(node_name(id));
        self.issue(&node_name(id), &names, Validity::Current)
    }
}

/// The files [`write_dev_pki`] made.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// Each node's certificate and key, by node id.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    /// A client certificate and key (common name `quipu-admin`).
    pub client: (PathBuf, PathBuf),
}

/// Makes a CA, a certificate for each of `nodes` (valid for `hosts`), and one client
/// certificate, and writes them as PEM to `dir`: `ca.pem`, `node-ID.pem` and `node-ID.key`,
/// `client.pem` and `client.key`. Keys are written readable by their owner only.
pub fn write_dev_pki(dir: &Path, nodes: &[u64], hosts: &[&str]) -> Result<DevPki, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = DevCa::new()?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.cert_pem(), false)?;
    let mut written = Vec::new();
    for id in nodes {
        let issued = ca.issue_node(*id, hosts)?;
        let cert = dir.join(format!("node-{id}.pem"));
        let key = dir.join(format!("node-{id}.key"));
        write(&cert, &issued.cert_pem, false)?;
        write(&key, &issued.key_pem, true)?;
        written.push((*id, cert, key));
    }
    let client = ca.issue(
        "quipu-admin",
        &["quipu-admin".to_owned()],
        Validity::Current,
    )?;
    let client_cert = dir.join("client.pem");
    let client_key = dir.join("client.key");
    write(&client_cert, &client.cert_pem, false)?;
    write(&client_key, &client.key_pem, true)?;
    Ok(DevPki {
        ca: ca_path,
        nodes: written,
        client: (client_cert, client_key),
    })
}

/// Writes `text` to `path`; a `secret` is readable by its owner only.
pub fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let failed = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(failed)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed)
}
