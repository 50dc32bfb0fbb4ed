//! Who a client request comes from, and whether the cluster's access control bindings let it
//! through. Both listeners (Kafka and gRPC) authenticate their clients into a [`Principal`] and
//! ask [`NodeHandle::authorize`] before they act; the decision is `quipu_meta::acls::authorize`
//! over this node's view of the metadata. Behaviour: `docs/protocol/security.md`.
//!
//! Invariant: with authorization on, a request that no binding allows is refused (deny by
//! default); with it off, every request is allowed and no binding is read.

use std::net::IpAddr;

use quipu_meta::acls::{self, Operation, ResourceType};

use crate::NodeHandle;

/// The principal of a client that did not authenticate (Kafka's).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// An authenticated client: its principal (`User:NAME`) and the address it connects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `User:NAME`; [`ANONYMOUS`] when the client did not authenticate.
    pub name: String,
    /// The client's address.
    pub host: IpAddr,
}

impl Principal {
    /// A client that authenticated as `user` (a SASL user name or a certificate's subject).
    /// An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) is its IPv4 address, so that
    /// bindings naming that address apply to it.
    pub fn user(user: &str, host: IpAddr) -> Principal {
        Principal {
            name: format!("User:{user}"),
            host: host.to_canonical(),
        }
    }

    /// A client that did not authenticate (its address as [`Principal::user`] keeps it).
    pub fn anonymous(host: IpAddr) -> Principal {
        Principal {
            name: ANONYMOUS.to_owned(),
            host: host.to_canonical(),
        }
    }
}

/// Whether requests are checked against the access control bindings, and who passes every
/// check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationConfig {
    /// Off: every request is allowed. On: only what a binding allows (or a superuser asks).
    pub enabled: bool,
    /// Principals (`User:NAME`) allowed everything.
    pub super_users: Vec<String>,
}

impl NodeHandle {
    /// Whether this node checks requests against the access control bindings.
    pub fn authorization_enabled(&self) -> bool {
        self.inner.config.authorization.enabled
    }

    /// Whether `who` may do `operation` on the resource `name` of type `resource_type`; always
    /// yes when authorization is off. A refusal is logged (debug) with the principal, host,
    /// operation and resource.
    pub fn authorize(
        &self,
        who: &Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let config = &self.inner.config.authorization;
        if !config.enabled {
            return true;
        }
        let host = who.host.to_string();
        let decision = self.with_metadata(|m| {
            acls::authorize(
                m.acls(),
                &config.super_users,
                &who.name,
                &host,
                operation,
                resource_type,
                name,
            )
        });
        if !decision.permits() {
            tracing::debug!(
                principal = %who.name,
                %host,
                %operation,
                %resource_type,
                resource = name,
                ?decision,
                "request denied"
            );
        }
        decision.permits()
    }

    /// Whether `who` may do `operation` on the cluster.
    pub fn authorize_cluster(&self, who: &Principal, operation: Operation) -> bool {
        self.authorize(
            who,
            operation,
            ResourceType::Cluster,
            acls::CLUSTER_RESOURCE,
        )
    }

    /// Whether `who` may do `operation` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`): a binding allows it on some name, and no binding denies it on
    /// every name (a literal `*` deny).
    pub fn authorize_any(
        &self,
        who: &Principal,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let config = &self.inner.config.authorization;
        if !config.enabled || config.super_users.contains(&who.name) {
            return true;
        }
        let host = who.host.to_string();
        self.with_metadata(|m| {
            acls::authorize_any(m.acls(), &who.name, &host, operation, resource_type)
        })
    }
}

/// The SCRAM credentials of the cluster metadata, as every listener checks a password or a SCRAM
/// exchange against them.
impl quipu_auth::Credentials for crate::NodeHandle {
    fn lookup(
        &self,
        user: &str,
        mechanism: quipu_meta::ScramMechanism,
    ) -> Option<quipu_meta::ScramCredential> {
        self.with_metadata(|m| m.scram_credential(user, mechanism).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_on_an_ipv6_socket_is_its_ipv4_address() {
        let mapped: IpAddr = "::ffff:10.0.0.5"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v4 = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(Principal::user("alice", mapped).host, v4);
        assert_eq!(Principal::anonymous(mapped).host, v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(v4);
        assert_eq!(Principal::anonymous(v6).host, v6);
    }
}
