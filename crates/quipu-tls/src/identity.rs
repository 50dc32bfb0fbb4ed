//! Node identities: a node's certificate names its node id as a DNS subject alternative name
//! `quipu-node-ID` (beside the host names and addresses peers reach it at).

use rustls_pki_types::CertificateDer;

/// The prefix of the DNS name that carries a node id.
pub const NODE_NAME_PREFIX: &str = "quipu-node-";

/// The DNS name that says a certificate belongs to node `id`.
pub fn node_name(id: u64) -> String {
    format!("{NODE_NAME_PREFIX}{id}")
}

/// The node id `cert` names, if it names exactly one (a certificate naming two nodes names
/// none). The certificate must have been verified against the cluster CA already (the TLS
/// handshake did).
pub fn node_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids = cert.valid_dns_names().filter_map(|name| {
        let digits = name.strip_prefix(NODE_NAME_PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

/// The node id the first certificate of the PEM file at `path` names.
pub fn node_of_file(path: &std::path::Path) -> Result<Option<u64>, crate::TlsError> {
    Ok(crate::pem::certificates(path)?
        .first()
        .and_then(|c| node_of(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_node_certificate_names_its_node() {
        assert_eq!(node_of(&cert_with(&["localhost", "quipu-node-3"])), Some(3));
        assert_eq!(node_of(&cert_with(&["localhost"])), None);
        assert_eq!(node_of(&cert_with(&["quipu-node-"])), None);
        assert_eq!(node_of(&cert_with(&["quipu-node-x1"])), None);
        assert_eq!(
            node_of(&cert_with(&["quipu-node-99999999999999999999999"])),
            None
        );
        assert_eq!(node_of(&cert_with(&["quipu-node-1", "quipu-node-2"])), None);
        assert_eq!(node_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
