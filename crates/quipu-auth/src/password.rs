//! [`PasswordCache`]: passwords that verified, so that a client that sends its password with
//! every call (the gRPC API's basic authentication) pays the PBKDF2 derivation once, not per
//! call.
//!
//! Invariant: the cache holds no password and nothing a password can be read back from: per
//! user, an HMAC of the password under a key drawn at random when the cache is made (and never
//! kept elsewhere), and the stored key of the credential it verified against, so that a changed
//! or deleted credential matches no entry.

use std::collections::HashMap;
use std::sync::Mutex;

use quipu_meta::ScramMechanism;

use crate::scram::{hmac_of, password_credential, same};
use crate::{AuthError, Credentials};

/// Most users remembered; past it the cache starts afresh.
pub const PASSWORD_CACHE_USERS_MAX: usize = 10_000;

/// A password that verified.
struct Verified {
    /// HMAC-SHA-256 of the password under the cache's key.
    tag: Vec<u8>,
    /// The stored key of the credential it verified against.
    stored_key: Vec<u8>,
}

/// Passwords that verified, by user.
pub struct PasswordCache {
    key: Vec<u8>,
    verified: Mutex<HashMap<String, Verified>>,
}

impl std::fmt::Debug for PasswordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCache").finish_non_exhaustive()
    }
}

impl Default for PasswordCache {
    fn default() -> Self {
        PasswordCache::new()
    }
}

impl PasswordCache {
    /// An empty cache with a fresh random key.
    pub fn new() -> PasswordCache {
        PasswordCache {
            key: crate::random_bytes(32),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, user: &str, password: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(8 + user.len() + password.len());
        data.extend_from_slice(&(user.len() as u64).to_be_bytes());
        data.extend_from_slice(user.as_bytes());
        data.extend_from_slice(password);
        hmac_of(ScramMechanism::Sha256, &self.key, &data)
    }

    /// Whether the password is `user`'s as its credential now says, without deriving the key
    /// again when this password verified against this credential before.
    pub fn remembered(&self, user: &str, password: &[u8], credentials: &dyn Credentials) -> bool {
        let Some((_, credential)) = password_credential(user, credentials) else {
            return false;
        };
        let tag = self.tag(user, password);
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(user)
            .is_some_and(|v| same(&v.tag, &tag) && same(&v.stored_key, &credential.stored_key))
    }

    /// Checks `password` against `user`'s credential (see `check_password`), from the cache
    /// when it can; a password that verifies is remembered.
    pub fn verify(
        &self,
        user: &str,
        password: &[u8],
        credentials: &dyn Credentials,
    ) -> Result<(), AuthError> {
        if self.remembered(user, password, credentials) {
            return Ok(());
        }
        // The credential checked is the one remembered: a change between a check and a second
        // look-up could otherwise tie the old password to the new credential.
        let Some((mechanism, credential)) = password_credential(user, credentials) else {
            // Unknown: the same work as a known user's, and the same refusal.
            return crate::check_password(user, password, credentials);
        };
        if !crate::verify_password(mechanism, &credential, password) {
            return Err(AuthError::InvalidCredentials {
                user: quipu_meta::shown(user),
            });
        }
        {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= PASSWORD_CACHE_USERS_MAX && !verified.contains_key(user) {
                verified.clear();
            }
            verified.insert(
                user.to_owned(),
                Verified {
                    tag: self.tag(user, password),
                    stored_key: credential.stored_key,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::Mutex;

    use quipu_meta::ScramCredential;

    use super::*;

    #[derive(Default)]
    struct Store(Mutex<HashMap<String, ScramCredential>>);

    impl Credentials for Store {
        fn lookup(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            (mechanism == ScramMechanism::Sha256)
                .then(|| self.0.lock().unwrap().get(user).cloned())
                .flatten()
        }
    }

    impl Store {
        fn set(&self, user: &str, password: &[u8]) {
            let credential =
                crate::derive_credential(ScramMechanism::Sha256, password, b"salty", 4096);
            self.0.lock().unwrap().insert(user.to_owned(), credential);
        }
    }

    #[test]
    fn a_verified_password_is_remembered_until_its_credential_changes() {
        let store = Store::default();
        store.set("alice", b"one");
        let cache = PasswordCache::new();
        assert!(!cache.remembered("alice", b"one", &store));
        assert!(cache.verify("alice", b"two", &store).is_err());
        assert!(cache.verify("alice", b"one", &store).is_ok());
        assert!(cache.remembered("alice", b"one", &store));
        assert!(
            !cache.remembered("alice", b"two", &store),
            "another password"
        );
        assert!(!cache.remembered("bob", b"one", &store), "another user");
        store.set("alice", b"three");
        assert!(
            !cache.remembered("alice", b"one", &store),
            "the credential changed"
        );
        assert!(cache.verify("alice", b"one", &store).is_err());
        assert!(cache.verify("alice", b"three", &store).is_ok());
        store.0.lock().unwrap().clear();
        assert!(
            !cache.remembered("alice", b"three", &store),
            "the user is gone"
        );
        assert!(cache.verify("alice", b"three", &store).is_err());
    }
}
