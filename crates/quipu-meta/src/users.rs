//! Users and their SCRAM credentials (RFC 5802, RFC 7677), as Kafka keeps them: per user and
//! mechanism, a salt, an iteration count and the two keys derived from the salted password
//! (`StoredKey`, `ServerKey`). The password itself, or anything it can be read back from, is
//! never stored. Replicated in the cluster metadata by [`crate::Command::UpsertScramCredential`]
//! and [`crate::Command::DeleteScramCredential`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A SCRAM mechanism, numbered as Kafka's `ScramMechanism` (1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// Both, in Kafka's order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's number for it (`ScramMechanism` in the admin APIs).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of Kafka's number.
    pub fn from_kafka_type(number: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.kafka_type() == number)
    }

    /// Bytes of its hash (and so of its keys).
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// Fewest PBKDF2 iterations a credential may have (Kafka's minimum).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations a credential may have (Kafka's maximum).
pub const ITERATIONS_MAX: u32 = 16384;
/// PBKDF2 iterations of a credential `quipu user create` makes unless told otherwise, and of the
/// decoy an unknown user's SCRAM exchange runs against (so that its challenge and its cost look
/// like a real user's).
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// Longest salt, in bytes.
pub const SALT_BYTES_MAX: usize = 128;
/// Longest user name, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 256;
/// Most users with credentials in a cluster.
pub const USERS_MAX: usize = 100_000;

/// One user's credential for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt of the salted password.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations of the salted password.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// Why a credential or user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// An empty or too long user name, or one with control characters.
    #[error("invalid user name (1 to {USER_NAME_BYTES_MAX} bytes, no control characters)")]
    InvalidName,
    /// Iterations out of Kafka's range.
    #[error("{0} iterations is out of range: {ITERATIONS_MIN} to {ITERATIONS_MAX}")]
    Iterations(u32),
    /// An empty or too long salt.
    #[error("a salt of {0} bytes is out of range: 1 to {SALT_BYTES_MAX}")]
    Salt(usize),
    /// Keys of the wrong length for the mechanism.
    #[error("{mechanism:?} keys are {expected} bytes, not {got}")]
    KeyLength {
        /// The mechanism.
        mechanism: ScramMechanism,
        /// Its hash length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The cluster holds its most users.
    #[error("the cluster holds its most users ({USERS_MAX})")]
    TooManyUsers,
    /// No such credential.
    #[error("user {user:?} has no {mechanism:?} credential")]
    NotFound {
        /// The user (cut to 64 characters).
        user: String,
        /// The mechanism.
        mechanism: ScramMechanism,
    },
}

/// Whether `name` may name a user: 1 to [`USER_NAME_BYTES_MAX`] bytes, no control characters.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= USER_NAME_BYTES_MAX && !name.chars().any(char::is_control)
}

impl ScramCredential {
    /// Checks the credential's fields against `mechanism` and Kafka's bounds.
    pub fn check(&self, mechanism: ScramMechanism) -> Result<(), CredentialError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(CredentialError::Iterations(self.iterations));
        }
        if self.salt.is_empty() || self.salt.len() > SALT_BYTES_MAX {
            return Err(CredentialError::Salt(self.salt.len()));
        }
        for key in [&self.stored_key, &self.server_key] {
            if key.len() != mechanism.hash_len() {
                return Err(CredentialError::KeyLength {
                    mechanism,
                    expected: mechanism.hash_len(),
                    got: key.len(),
                });
            }
        }
        Ok(())
    }
}

/// Every user's credentials, by user name, then mechanism.
pub type Users = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;
