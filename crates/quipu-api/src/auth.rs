//! Who a client API call comes from, and whether it may do what it asks. Behaviour:
//! `docs/protocol/security.md` ("The gRPC API").
//!
//! A call's principal: the user of its `authorization: Basic base64(USER:PASSWORD)` header,
//! checked against the user's SCRAM credential (only over TLS: a password on a plaintext
//! listener is refused, not read); else the subject of the connection's client certificate;
//! else `User:ANONYMOUS`. A failed check is answered UNAUTHENTICATED after
//! [`FAILED_AUTHENTICATION_DELAY`] (one connection's failures one per delay, however many calls
//! it makes at once), and logged with the peer's address and the user, never the password.
//!
//! Invariant: with authorization off, a call without credentials costs nothing here; a password
//! is derived (PBKDF2) at most [`VERIFICATIONS_MAX`] at a time on this node, off the runtime's
//! threads, and once per user and password while its credential stays the same.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use quipu_meta::acls::{Operation, ResourceType};
use quipu_node::{NodeHandle, Principal};
use quipu_proto::v1::ErrorReason;
use tonic::{Code, Request, Status};

use crate::error::status;

/// How long a failed authentication waits before it is answered.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(500);
/// Most passwords derived at once on a node.
pub const VERIFICATIONS_MAX: usize = 2;
/// Longest `authorization` header read, in bytes.
const HEADER_BYTES_MAX: usize = 1024;
/// Most connections whose failed authentications are remembered (past it, those whose answers
/// are all given are forgotten).
const PENALIZED_CONNECTIONS_MAX: usize = 10_000;

/// Authenticates and authorizes the calls of one node's client API.
#[derive(Debug)]
pub(crate) struct Gate {
    node: NodeHandle,
    /// Whether the listener is TLS (passwords are read only then).
    tls: bool,
    passwords: Arc<quipu_auth::PasswordCache>,
    verifications: Arc<tokio::sync::Semaphore>,
    penalties: Penalties,
}

/// Per connection (the client's address and port), when its last failed authentication is
/// answered: one connection's failures are answered one per [`FAILED_AUTHENTICATION_DELAY`],
/// however many calls it makes at once.
#[derive(Debug, Default)]
struct Penalties(std::sync::Mutex<HashMap<SocketAddr, tokio::time::Instant>>);

impl Penalties {
    /// When a failure of the connection at `peer` is answered, failing at `now`: the delay
    /// after now, or after the answer to the connection's previous failure if that is later.
    fn due(&self, peer: Option<SocketAddr>, now: tokio::time::Instant) -> tokio::time::Instant {
        let Some(peer) = peer else {
            return now + FAILED_AUTHENTICATION_DELAY;
        };
        let mut penalties = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if penalties.len() >= PENALIZED_CONNECTIONS_MAX {
            penalties.retain(|_, due| *due > now);
        }
        let due =
            penalties.get(&peer).map_or(now, |last| (*last).max(now)) + FAILED_AUTHENTICATION_DELAY;
        penalties.insert(peer, due);
        due
    }
}

fn unauthenticated(message: &str) -> Status {
    status(
        Code::Unauthenticated,
        ErrorReason::NotAuthenticated,
        message,
        None,
    )
}

/// A call's principal may not do what it asked.
pub(crate) fn denied(operation: Operation, resource_type: ResourceType, name: &str) -> Status {
    status(
        Code::PermissionDenied,
        ErrorReason::NotAuthorized,
        format!(
            "not authorized to {operation} {resource_type} {}",
            quipu_meta::shown(name)
        ),
        None,
    )
}

/// The user and password of a `Basic` header; refused on a listener without TLS (`tls`
/// false), where the password crossed the network in the clear.
fn basic_credentials(header: &[u8], tls: bool) -> Result<(String, Vec<u8>), Status> {
    if !tls {
        return Err(unauthenticated(
            "a password is accepted only over TLS: this listener has no [api.tls]",
        ));
    }
    if header.len() > HEADER_BYTES_MAX {
        return Err(unauthenticated("the authorization header is too long"));
    }
    let encoded = header
        .strip_prefix(b"Basic ")
        .ok_or_else(|| unauthenticated("the authorization header is not Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| unauthenticated("the authorization header is not base64"))?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(|| unauthenticated("the authorization header has no USER:PASSWORD"))?;
    let user = std::str::from_utf8(&decoded[..colon])
        .map_err(|_| unauthenticated("the user name is not UTF-8"))?
        .to_owned();
    Ok((user, decoded[colon + 1..].to_vec()))
}

impl Gate {
    pub(crate) fn new(node: NodeHandle, tls: bool) -> Gate {
        Gate {
            node,
            tls,
            passwords: Arc::new(quipu_auth::PasswordCache::new()),
            verifications: Arc::new(tokio::sync::Semaphore::new(VERIFICATIONS_MAX)),
            penalties: Penalties::default(),
        }
    }

    /// The principal of `request`, or UNAUTHENTICATED.
    pub(crate) async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let host = request
            .remote_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        if let Some(header) = request.metadata().get("authorization") {
            let (user, password) = basic_credentials(header.as_bytes(), self.tls)?;
            return match self.verify(&user, password).await {
                Ok(()) => Ok(Principal::user(&user, host)),
                Err(e) => {
                    tracing::warn!(peer = %host, error = &e as &dyn std::error::Error, "client API authentication failed");
                    let due = self
                        .penalties
                        .due(request.remote_addr(), tokio::time::Instant::now());
                    tokio::time::sleep_until(due).await;
                    Err(unauthenticated(
                        "authentication failed: invalid credentials",
                    ))
                }
            };
        }
        // Without authorization nothing reads the principal: no certificate is parsed per call.
        if !self.node.authorization_enabled() {
            return Ok(Principal::anonymous(host));
        }
        let subject = request
            .peer_certs()
            .and_then(|chain| chain.first().and_then(quipu_tls::subject_of));
        Ok(match subject {
            Some(subject) => Principal::user(&subject, host),
            None => Principal::anonymous(host),
        })
    }

    async fn verify(&self, user: &str, password: Vec<u8>) -> Result<(), quipu_auth::AuthError> {
        if self.passwords.remembered(user, &password, &self.node) {
            return Ok(());
        }
        let Ok(_permit) = self.verifications.acquire().await else {
            return Err(quipu_auth::AuthError::InvalidCredentials {
                user: quipu_meta::shown(user),
            });
        };
        let (node, passwords, user) = (
            self.node.clone(),
            Arc::clone(&self.passwords),
            user.to_owned(),
        );
        tokio::task::spawn_blocking(move || passwords.verify(&user, &password, &node))
            .await
            .unwrap_or_else(|_| {
                Err(quipu_auth::AuthError::InvalidCredentials {
                    user: String::new(),
                })
            })
    }

    /// Ok if `who` may do `operation` on `name`, else PERMISSION_DENIED.
    pub(crate) fn allow(
        &self,
        who: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        if self.node.authorize(who, operation, resource_type, name) {
            Ok(())
        } else {
            Err(denied(operation, resource_type, name))
        }
    }

    /// Ok if `who` may do `operation` on topic `name`.
    pub(crate) fn topic(
        &self,
        who: &Principal,
        operation: Operation,
        name: &str,
    ) -> Result<(), Status> {
        self.allow(who, operation, ResourceType::Topic, name)
    }

    /// Ok if `who` may do `operation` on group `name`.
    pub(crate) fn group(
        &self,
        who: &Principal,
        operation: Operation,
        name: &str,
    ) -> Result<(), Status> {
        self.allow(who, operation, ResourceType::Group, name)
    }

    /// Ok if `who` may do `operation` on the cluster.
    pub(crate) fn cluster(&self, who: &Principal, operation: Operation) -> Result<(), Status> {
        self.allow(
            who,
            operation,
            ResourceType::Cluster,
            quipu_meta::acls::CLUSTER_RESOURCE,
        )
    }

    /// Whether `who` may do `operation` on topic `name` (for listings that leave out what the
    /// principal may not see).
    pub(crate) fn may(
        &self,
        who: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.node.authorize(who, operation, resource_type, name)
    }

    /// The principal of `request`, if it may do `operation` on topic `name`.
    pub(crate) async fn topic_caller<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
        name: &str,
    ) -> Result<Principal, Status> {
        let who = self.principal(request).await?;
        self.topic(&who, operation, name)?;
        Ok(who)
    }

    /// The principal of `request`, if it may do `operation` on the cluster.
    pub(crate) async fn cluster_caller<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
    ) -> Result<Principal, Status> {
        let who = self.principal(request).await?;
        self.cluster(&who, operation)?;
        Ok(who)
    }

    /// Whether `who` may produce idempotently: IDEMPOTENT_WRITE on the cluster, or WRITE on
    /// some topic (Kafka's KIP-679).
    pub(crate) fn idempotent_writer(&self, who: &Principal) -> Result<(), Status> {
        if self.node.authorize_cluster(who, Operation::IdempotentWrite)
            || self
                .node
                .authorize_any(who, Operation::Write, ResourceType::Topic)
        {
            Ok(())
        } else {
            Err(denied(
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                quipu_meta::acls::CLUSTER_RESOURCE,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_connections_failures_are_answered_one_per_delay() {
        let penalties = Penalties::default();
        let now = tokio::time::Instant::now();
        let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        let delay = FAILED_AUTHENTICATION_DELAY;
        assert_eq!(penalties.due(Some(a), now), now + delay);
        assert_eq!(penalties.due(Some(a), now), now + delay * 2);
        assert_eq!(penalties.due(Some(a), now), now + delay * 3);
        assert_eq!(
            penalties.due(Some(b), now),
            now + delay,
            "another connection"
        );
        let later = now + delay * 10;
        assert_eq!(
            penalties.due(Some(a), later),
            later + delay,
            "a past penalty"
        );
        assert_eq!(penalties.due(None, now), now + delay);
    }

    #[test]
    fn basic_credentials_are_read_over_tls_only_and_checked_for_shape() {
        let header = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        assert_eq!(
            basic_credentials(header("alice:pa:ss").as_bytes(), true).unwrap(),
            ("alice".to_owned(), b"pa:ss".to_vec())
        );
        let refused = |bytes: &[u8], tls| {
            let status = basic_credentials(bytes, tls).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            status.message().to_owned()
        };
        assert!(refused(header("alice:x").as_bytes(), false).contains("only over TLS"));
        assert!(refused(b"Bearer abc", true).contains("not Basic"));
        assert!(refused(b"Basic !!!", true).contains("base64"));
        assert!(refused(header("alice").as_bytes(), true).contains("USER:PASSWORD"));
        let long = header(&format!("alice:{}", "x".repeat(2000)));
        assert!(refused(long.as_bytes(), true).contains("too long"));
    }
}
