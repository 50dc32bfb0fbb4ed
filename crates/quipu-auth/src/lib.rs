//! Authentication of Quipu's users: the server side of SASL SCRAM-SHA-256 and SCRAM-SHA-512
//! (RFC 5802, RFC 7677) and SASL PLAIN (RFC 4616), against the salted credentials the cluster
//! metadata keeps (`quipu_meta::users`). Crypto is ring's (PBKDF2, HMAC, SHA-2, the system's
//! random numbers).
//!
//! Invariant: a password is never stored or logged; what is kept of it is what SCRAM keeps
//! (salt, iterations, `StoredKey`, `ServerKey`), from which it cannot be read back. An unknown
//! user is answered like a known one until the proof fails, so that an exchange does not tell
//! which users exist; every comparison of secrets takes the same time whatever they hold.

mod password;
mod scram;

pub use password::{PASSWORD_CACHE_USERS_MAX, PasswordCache};
pub use scram::{
    AuthError, CLIENT_MESSAGE_BYTES_MAX, Credentials, ScramServer, Step, check_password,
    credential_from_salted, derive_credential, plain, random_bytes, salted_password,
    verify_password,
};
