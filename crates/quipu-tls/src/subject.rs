//! A client certificate's subject as a principal name: the distinguished name in RFC 2253's
//! string form, as Kafka's default principal builder gives it (Java's `X500Principal.getName()`):
//! the last RDN first, `,` between RDNs, `+` between the attributes of one, the keywords CN, C,
//! L, ST, O, OU, STREET, DC and UID, any other attribute as its dotted OID with `#` and the
//! value's DER in hex, and `,+"\<>;` (and a leading `#` or space, a trailing space) escaped.

use rustls_pki_types::CertificateDer;
use x509_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The keywords RFC 2253 (and Java) write by name.
const KEYWORDS: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The subject of `cert` in RFC 2253 form; `None` if it does not parse or names nothing.
pub fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let rdns: Vec<_> = cert.subject().iter().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            let keyword = KEYWORDS.iter().find(|(o, _)| *o == oid).map(|(_, k)| *k);
            match (keyword, attr.as_str()) {
                (Some(keyword), Ok(value)) => {
                    out.push_str(keyword);
                    out.push('=');
                    escape(value, &mut out);
                }
                _ => {
                    out.push_str(&oid);
                    out.push_str("=#");
                    for byte in attr.attr_value().to_der_vec().ok()? {
                        out.push_str(&format!("{byte:02x}"));
                    }
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Appends `value` with RFC 2253's escapes.
fn escape(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_named(attributes: &[(rcgen::DnType, &str)]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in attributes {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_subject_reads_as_kafka_names_it() {
        let cert = cert_named(&[
            (rcgen::DnType::CountryName, "DE"),
            (rcgen::DnType::OrganizationName, "Quipu, Inc"),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            subject_of(&cert).as_deref(),
            Some("CN=alice,O=Quipu\\, Inc,C=DE")
        );
        let cert = cert_named(&[(rcgen::DnType::CommonName, " #x+y ")]);
        assert_eq!(subject_of(&cert).as_deref(), Some("CN=\\ #x\\+y\\ "));
        let cert = cert_named(&[(rcgen::DnType::CommonName, "#a;b")]);
        assert_eq!(subject_of(&cert).as_deref(), Some("CN=\\#a\\;b"));
        assert_eq!(subject_of(&CertificateDer::from(vec![1, 2, 3])), None);
        assert_eq!(subject_of(&cert_named(&[])), None);
    }
}
