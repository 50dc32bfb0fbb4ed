//! SCRAM (RFC 5802) and PLAIN (RFC 4616), server side.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use quipu_meta::{ScramCredential, ScramMechanism};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// Longest client message of an exchange, in bytes.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4096;
/// Bytes of the server's half of the nonce, before base64.
const SERVER_NONCE_BYTES: usize = 24;

/// Where an exchange looks a user's credential up (the node's metadata).
pub trait Credentials {
    /// `user`'s credential for `mechanism`, if it has one.
    fn lookup(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// Why an exchange failed. The client is told only that authentication failed; the variant is
/// for the log (it never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The message does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {what}")]
    Malformed {
        /// The mechanism.
        mechanism: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A client message larger than [`CLIENT_MESSAGE_BYTES_MAX`].
    #[error("a client message of {0} bytes is larger than {CLIENT_MESSAGE_BYTES_MAX}")]
    TooLarge(usize),
    /// The client asked for channel binding, or for a delegation token, which this server does
    /// not offer.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// The client authorizes as another identity than it authenticates as.
    #[error("the authorization identity differs from the user")]
    OtherIdentity,
    /// The user is unknown or the proof or password is wrong (never said apart).
    #[error("invalid credentials for user {user:?}")]
    InvalidCredentials {
        /// The user named (cut to 64 characters).
        user: String,
    },
    /// A message after the exchange ended.
    #[error("the exchange is over")]
    Over,
}

fn malformed(mechanism: ScramMechanism, what: &'static str) -> AuthError {
    AuthError::Malformed {
        mechanism: mechanism.name(),
        what,
    }
}

fn shown(user: &str) -> String {
    user.chars().take(64).collect()
}

fn algorithms(
    mechanism: ScramMechanism,
) -> (
    pbkdf2::Algorithm,
    hmac::Algorithm,
    &'static digest::Algorithm,
) {
    match mechanism {
        ScramMechanism::Sha256 => (
            pbkdf2::PBKDF2_HMAC_SHA256,
            hmac::HMAC_SHA256,
            &digest::SHA256,
        ),
        ScramMechanism::Sha512 => (
            pbkdf2::PBKDF2_HMAC_SHA512,
            hmac::HMAC_SHA512,
            &digest::SHA512,
        ),
    }
}

pub(crate) fn hmac_of(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(algorithms(mechanism).1, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// `count` bytes from the system's secure random number generator.
pub fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator works");
    bytes
}

/// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.hash_len()];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        algorithms(mechanism).0,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// The credential of a salted password (what Kafka's AlterUserScramCredentials sends).
pub fn credential_from_salted(
    mechanism: ScramMechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac_of(mechanism, salted, b"Client Key");
    let stored_key = digest::digest(algorithms(mechanism).2, &client_key)
        .as_ref()
        .to_vec();
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key,
        server_key: hmac_of(mechanism, salted, b"Server Key"),
    }
}

/// The credential of `password` with `salt` and `iterations`.
pub fn derive_credential(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let salted = salted_password(mechanism, password, salt, iterations);
    credential_from_salted(mechanism, &salted, salt, iterations)
}

/// Equal bytes, compared in a time that depends only on the lengths.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `password` is the one `credential` was derived from.
pub fn verify_password(
    mechanism: ScramMechanism,
    credential: &ScramCredential,
    password: &[u8],
) -> bool {
    let derived = derive_credential(mechanism, password, &credential.salt, credential.iterations);
    same(&derived.stored_key, &credential.stored_key)
}

/// A credential for a user that does not exist: stable per user and process (a repeated attempt
/// sees the same salt), matching no password, with the iterations `quipu user create` gives a
/// real user (a challenge with other iterations would say that the user does not exist).
fn decoy(mechanism: ScramMechanism, user: &str) -> ScramCredential {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    let secret = SECRET.get_or_init(|| random_bytes(32));
    let salt = hmac_of(mechanism, secret, user.as_bytes())[..16].to_vec();
    ScramCredential {
        salt,
        iterations: quipu_meta::ITERATIONS_DEFAULT,
        stored_key: random_bytes(mechanism.hash_len()),
        server_key: random_bytes(mechanism.hash_len()),
    }
}

/// What the server answers a client message with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The exchange goes on: send this challenge.
    Continue(Vec<u8>),
    /// The client is authenticated as `user`; send `last` (the server's final message, empty for
    /// PLAIN).
    Done {
        /// The authenticated user.
        user: String,
        /// The server's last message.
        last: Vec<u8>,
    },
}

#[derive(Debug)]
enum State {
    First,
    /// The server-first message was sent: what the final message is checked against.
    Final(Box<Exchange>),
    Over,
}

/// The server side of one SCRAM exchange.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

/// `saslname` with `=2C` and `=3D` decoded (RFC 5802 §5.1); `None` if another `=` escape or a
/// bare `,` appears.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find(['=', ',']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

fn text(mechanism: ScramMechanism, message: &[u8]) -> Result<&str, AuthError> {
    if message.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(AuthError::TooLarge(message.len()));
    }
    std::str::from_utf8(message).map_err(|_| malformed(mechanism, "not UTF-8"))
}

impl ScramServer {
    /// A new exchange of `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
        }
    }

    /// Takes the client's next message and says what to answer.
    pub fn step(
        &mut self,
        message: &[u8],
        credentials: &dyn Credentials,
    ) -> Result<Step, AuthError> {
        let message = text(self.mechanism, message)?;
        match std::mem::replace(&mut self.state, State::Over) {
            State::First => self.first(message, credentials),
            State::Final(exchange) => self.last(message, &exchange),
            State::Over => Err(AuthError::Over),
        }
    }

    fn first(&mut self, message: &str, credentials: &dyn Credentials) -> Result<Step, AuthError> {
        let m = self.mechanism;
        let (flag, rest) = message
            .split_once(',')
            .ok_or_else(|| malformed(m, "no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => return Err(AuthError::Unsupported("channel binding")),
            _ => return Err(malformed(m, "bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed(m, "no gs2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let mut fields = bare.split(',');
        let user_field = fields.next().unwrap_or_default();
        if user_field.starts_with("m=") {
            return Err(AuthError::Unsupported("mandatory extensions"));
        }
        let user = user_field
            .strip_prefix("n=")
            .and_then(decode_saslname)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| malformed(m, "no user name"))?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed(m, "no nonce"))?;
        for extension in fields {
            if extension.starts_with("tokenauth") {
                return Err(AuthError::Unsupported("delegation tokens"));
            }
        }
        if !authzid.is_empty() {
            let authorized = authzid.strip_prefix("a=").and_then(decode_saslname);
            if authorized.as_deref() != Some(user.as_str()) {
                return Err(AuthError::OtherIdentity);
            }
        }
        let (credential, known) = match credentials.lookup(&user, m) {
            Some(credential) => (credential, true),
            None => (decoy(m, &user), false),
        };
        // Hex digits: printable without ',' as RFC 5802 asks, and nothing a client could
        // mistake for an escape or a separator.
        let server_nonce: String = random_bytes(SERVER_NONCE_BYTES)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::Final(Box::new(Exchange {
            user,
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            credential,
            known,
        }));
        Ok(Step::Continue(server_first.into_bytes()))
    }

    fn last(&mut self, message: &str, exchange: &Exchange) -> Result<Step, AuthError> {
        let m = self.mechanism;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| malformed(m, "no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or_else(|| malformed(m, "no channel binding"))?;
        if binding != BASE64.encode(&exchange.gs2_header) {
            return Err(malformed(
                m,
                "channel binding differs from the first message",
            ));
        }
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| malformed(m, "no nonce"))?;
        if nonce != exchange.nonce {
            return Err(malformed(m, "the nonce is not the server's"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed(m, "the proof is not base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            exchange.client_first_bare, exchange.server_first
        );
        let credential = &exchange.credential;
        let signature = hmac_of(m, &credential.stored_key, auth_message.as_bytes());
        let invalid = || AuthError::InvalidCredentials {
            user: shown(&exchange.user),
        };
        if proof.len() != signature.len() {
            return Err(invalid());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = digest::digest(algorithms(m).2, &client_key);
        if !same(stored.as_ref(), &credential.stored_key) || !exchange.known {
            return Err(invalid());
        }
        let server_signature = hmac_of(m, &credential.server_key, auth_message.as_bytes());
        Ok(Step::Done {
            user: exchange.user.clone(),
            last: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        })
    }
}

/// The state kept between the two client messages of an exchange.
#[derive(Debug)]
struct Exchange {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
    known: bool,
}

/// The credential a password is checked against: `user`'s SCRAM-SHA-256 one if it has one, else
/// its SCRAM-SHA-512 one.
pub(crate) fn password_credential(
    user: &str,
    credentials: &dyn Credentials,
) -> Option<(ScramMechanism, ScramCredential)> {
    ScramMechanism::ALL
        .into_iter()
        .find_map(|m| credentials.lookup(user, m).map(|c| (m, c)))
}

/// Whether `password` is `user`'s (against [`password_credential`]); an unknown user costs the
/// same work as a known one.
pub fn check_password(
    user: &str,
    password: &[u8],
    credentials: &dyn Credentials,
) -> Result<(), AuthError> {
    let valid = match password_credential(user, credentials) {
        Some((mechanism, credential)) => verify_password(mechanism, &credential, password),
        None => {
            // The same work as for a known user: the time taken tells nothing.
            let decoy = decoy(ScramMechanism::Sha256, user);
            let _ = verify_password(ScramMechanism::Sha256, &decoy, password);
            false
        }
    };
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidCredentials { user: shown(user) })
    }
}

/// SASL PLAIN: `[authzid] NUL authcid NUL password`, checked against the user's SCRAM
/// credential (SHA-256 if it has one, else SHA-512). Returns the user.
pub fn plain(message: &[u8], credentials: &dyn Credentials) -> Result<String, AuthError> {
    let bad = |what| AuthError::Malformed {
        mechanism: "PLAIN",
        what,
    };
    if message.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(AuthError::TooLarge(message.len()));
    }
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three NUL-separated fields"));
    };
    let user = std::str::from_utf8(user).map_err(|_| bad("the user is not UTF-8"))?;
    if user.is_empty() {
        return Err(bad("no user name"));
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(AuthError::OtherIdentity);
    }
    check_password(user, password, credentials)?;
    Ok(user.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    struct Store(HashMap<(String, ScramMechanism), ScramCredential>);

    impl Credentials for Store {
        fn lookup(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_owned(), mechanism)).cloned()
        }
    }

    /// The client's final message for `password` after `client_first_bare` and the server's
    /// `server_first` (4,096 iterations), as RFC 5802 computes it, and the AuthMessage.
    fn client_final(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, String) {
        let nonce = server_first[2..].split(',').next().unwrap();
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let salted = salted_password(mechanism, password, salt, 4096);
        let client_key = hmac_of(mechanism, &salted, b"Client Key");
        let stored = digest::digest(algorithms(mechanism).2, &client_key);
        let signature = hmac_of(mechanism, stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        (format!("{without_proof},p={}", BASE64.encode(&proof)), auth)
    }

    /// RFC 7677 §3's example: user "user", password "pencil", SCRAM-SHA-256.
    #[test]
    fn the_rfc_7677_example_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = derive_credential(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let store = Store(HashMap::from([(
            ("user".to_owned(), ScramMechanism::Sha256),
            credential,
        )]));
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let Step::Continue(first) = server
            .step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &store)
            .unwrap()
        else {
            panic!("a challenge first");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=rOprNGfwEbeRWgbNEkqO"), "{first}");
        assert!(
            first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            "{first}"
        );
        // The RFC's exchange used the server nonce "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"; this server
        // chose its own, so the client's proof is computed here as RFC 5802 says.
        let (last, auth) = client_final(
            ScramMechanism::Sha256,
            b"pencil",
            &salt,
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            &first,
        );
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let Step::Done { user, last } = server.step(last.as_bytes(), &store).unwrap() else {
            panic!("done after the proof");
        };
        assert_eq!(user, "user");
        let server_key = hmac_of(ScramMechanism::Sha256, &salted, b"Server Key");
        let expected = hmac_of(ScramMechanism::Sha256, &server_key, auth.as_bytes());
        assert_eq!(last, format!("v={}", BASE64.encode(expected)).into_bytes());
        assert_eq!(server.step(b"again", &store), Err(AuthError::Over));
    }

    /// RFC 7677 §3's keys: the derived credential of "pencil" matches the published proof for
    /// the published messages.
    #[test]
    fn the_rfc_7677_published_proof_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = derive_credential(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = BASE64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = hmac_of(
            ScramMechanism::Sha256,
            &credential.stored_key,
            auth.as_bytes(),
        );
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = digest::digest(&digest::SHA256, &client_key);
        assert_eq!(stored.as_ref(), credential.stored_key.as_slice());
        let server_signature = hmac_of(
            ScramMechanism::Sha256,
            &credential.server_key,
            auth.as_bytes(),
        );
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// RFC 5802 §5's example for SCRAM-SHA-1 has no SHA-2 twin; SHA-512 is checked against its
    /// own definition: a wrong proof fails, the right one passes.
    #[test]
    fn sha512_exchanges_pass_with_the_password_and_fail_without() {
        let credential = derive_credential(ScramMechanism::Sha512, b"s3cret", b"saltsalt", 4096);
        let store = Store(HashMap::from([(
            ("alice".to_owned(), ScramMechanism::Sha512),
            credential,
        )]));
        for (password, ok) in [(&b"s3cret"[..], true), (&b"wrong"[..], false)] {
            let mut server = ScramServer::new(ScramMechanism::Sha512);
            let Step::Continue(first) = server.step(b"n,,n=alice,r=abc", &store).unwrap() else {
                panic!()
            };
            let first = String::from_utf8(first).unwrap();
            let (last, _) = client_final(
                ScramMechanism::Sha512,
                password,
                b"saltsalt",
                "n=alice,r=abc",
                &first,
            );
            assert_eq!(server.step(last.as_bytes(), &store).is_ok(), ok);
        }
    }

    #[test]
    fn unknown_users_look_like_known_ones_until_the_proof() {
        let store = Store(HashMap::new());
        let mut a = ScramServer::new(ScramMechanism::Sha256);
        let mut b = ScramServer::new(ScramMechanism::Sha256);
        let fields_of = |step: Step| match step {
            Step::Continue(first) => String::from_utf8(first)
                .unwrap()
                .split(',')
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            Step::Done { .. } => panic!(),
        };
        let first = fields_of(a.step(b"n,,n=ghost,r=x", &store).unwrap());
        let again = fields_of(b.step(b"n,,n=ghost,r=y", &store).unwrap());
        assert_eq!(first[0], again[0], "a repeated attempt sees the same salt");
        assert_eq!(
            first[1],
            format!("i={}", quipu_meta::ITERATIONS_DEFAULT),
            "the iterations a created user gets by default"
        );
        let refused = a.step(b"c=biws,r=wrong,p=AAAA", &store).unwrap_err();
        assert!(
            matches!(refused, AuthError::Malformed { .. }),
            "{refused:?}"
        );
    }

    #[test]
    fn malformed_and_unsupported_first_messages_are_refused() {
        let store = Store(HashMap::new());
        for (message, unsupported) in [
            (&b"p=tls-unique,,n=a,r=x"[..], true),
            (b"n,,m=ext,n=a,r=x", true),
            (b"n,,n=a,r=x,tokenauth=true", true),
            (b"n,,n=,r=x", false),
            (b"n,,n=a=2Xb,r=x", false),
            (b"n,,n=a", false),
            (b"q,,n=a,r=x", false),
            (b"\xff\xfe", false),
        ] {
            let refused = ScramServer::new(ScramMechanism::Sha256)
                .step(message, &store)
                .unwrap_err();
            assert_eq!(
                matches!(refused, AuthError::Unsupported(_)),
                unsupported,
                "{message:?}: {refused:?}"
            );
        }
        let huge = vec![b'a'; CLIENT_MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            ScramServer::new(ScramMechanism::Sha256).step(&huge, &store),
            Err(AuthError::TooLarge(huge.len()))
        );
        // Another identity than the user.
        assert_eq!(
            ScramServer::new(ScramMechanism::Sha256).step(b"n,a=root,n=a,r=x", &store),
            Err(AuthError::OtherIdentity)
        );
    }

    #[test]
    fn escaped_names_decode() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("plain").as_deref(), Some("plain"));
        assert_eq!(decode_saslname("a=4"), None);
    }

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let store = Store(HashMap::from([(
            ("bob".to_owned(), ScramMechanism::Sha512),
            derive_credential(ScramMechanism::Sha512, b"hunter2", b"pepper", 4096),
        )]));
        assert_eq!(plain(b"\0bob\0hunter2", &store).unwrap(), "bob");
        assert_eq!(plain(b"bob\0bob\0hunter2", &store).unwrap(), "bob");
        assert!(matches!(
            plain(b"\0bob\0hunter3", &store),
            Err(AuthError::InvalidCredentials { .. })
        ));
        assert!(matches!(
            plain(b"\0nobody\0hunter2", &store),
            Err(AuthError::InvalidCredentials { .. })
        ));
        assert_eq!(
            plain(b"eve\0bob\0hunter2", &store),
            Err(AuthError::OtherIdentity)
        );
        assert!(matches!(
            plain(b"bob\0hunter2", &store),
            Err(AuthError::Malformed { .. })
        ));
        assert!(matches!(
            plain(b"\0bob\0a\0b", &store),
            Err(AuthError::Malformed { .. })
        ));
    }
}
