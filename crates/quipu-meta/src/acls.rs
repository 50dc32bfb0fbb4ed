//! Access control lists in Kafka's model, and the decision they make: who (a principal, from a
//! host) may do what (an operation) to which resource (a topic, a group, the cluster, a
//! transactional id, named literally or by prefix). Pure: the listeners ask [`authorize`] with
//! the bindings the metadata holds.
//!
//! The decision is Kafka's (`StandardAuthorizer`): a superuser may do everything; otherwise a
//! matching DENY for the operation (or ALL) refuses, else a matching ALLOW for the operation, for
//! ALL, or for an operation that implies it (READ, WRITE, DELETE and ALTER imply DESCRIBE;
//! ALTER_CONFIGS implies DESCRIBE_CONFIGS) permits; with no matching binding, the answer is no.

use serde::{Deserialize, Serialize};

/// What a binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster itself (its one resource is named `kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// How a binding names its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The resource of exactly this name, or every one for `*`.
    Literal,
    /// Every resource whose name starts with this.
    Prefixed,
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Fetch, consume a group, read committed offsets.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records, groups.
    Delete,
    /// Change partitions, reassign, alter users.
    Alter,
    /// See that a resource exists (metadata, offsets, group state).
    Describe,
    /// Node-to-node actions.
    ClusterAction,
    /// Read settings.
    DescribeConfigs,
    /// Change settings.
    AlterConfigs,
    /// Produce idempotently (on the cluster).
    IdempotentWrite,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Permits the operation.
    Allow,
    /// Refuses it, whatever allows it.
    Deny,
}

/// The principal that matches every principal.
pub const ANY_PRINCIPAL: &str = "User:*";
/// The host that matches every host.
pub const ANY_HOST: &str = "*";
/// The resource name that a literal binding uses for every resource of its type.
pub const ANY_RESOURCE: &str = "*";

/// One access control entry bound to a resource pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource's name, a prefix of names, or `*`.
    pub resource_name: String,
    /// How `resource_name` matches.
    pub pattern_type: PatternType,
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// The client's address, or `*` for any.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Whether this binding is about `resource` of `resource_type`.
    fn covers(&self, resource_type: ResourceType, resource: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == ANY_RESOURCE || self.resource_name == resource
                }
                PatternType::Prefixed => resource.starts_with(&self.resource_name),
            }
    }

    /// Whether this binding speaks of `principal` connecting from `host`.
    fn concerns(&self, principal: &str, host: &str) -> bool {
        (self.principal == ANY_PRINCIPAL || self.principal == principal)
            && (self.host == ANY_HOST || self.host == host)
    }
}

/// The operations whose ALLOW permits `operation` (besides ALL).
fn implying(operation: Operation) -> &'static [Operation] {
    match operation {
        Operation::Describe => &[
            Operation::Describe,
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ],
        Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
        Operation::Read => &[Operation::Read],
        Operation::Write => &[Operation::Write],
        Operation::Create => &[Operation::Create],
        Operation::Delete => &[Operation::Delete],
        Operation::Alter => &[Operation::Alter],
        Operation::ClusterAction => &[Operation::ClusterAction],
        Operation::AlterConfigs => &[Operation::AlterConfigs],
        Operation::IdempotentWrite => &[Operation::IdempotentWrite],
        Operation::All => &[],
    }
}

/// What [`authorize`] decided, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A superuser.
    Superuser,
    /// An ALLOW binding permits it.
    Allowed,
    /// A DENY binding refuses it.
    Denied,
    /// No binding permits it.
    NoMatch,
}

impl Decision {
    /// Whether the operation may go on.
    pub fn permits(self) -> bool {
        matches!(self, Decision::Superuser | Decision::Allowed)
    }
}

/// Whether `principal` (`User:NAME`) connecting from `host` may do `operation` on `resource` of
/// `resource_type`, given `bindings` and the `superusers` (principals).
pub fn authorize(
    bindings: &[AclBinding],
    superusers: &[String],
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
    resource: &str,
) -> Decision {
    if superusers.iter().any(|s| s == principal) {
        return Decision::Superuser;
    }
    let relevant = || {
        bindings
            .iter()
            .filter(|b| b.covers(resource_type, resource) && b.concerns(principal, host))
    };
    let denied = relevant().any(|b| {
        b.permission == Permission::Deny
            && (b.operation == operation || b.operation == Operation::All)
    });
    if denied {
        return Decision::Denied;
    }
    let allowed = relevant().any(|b| {
        b.permission == Permission::Allow
            && (b.operation == Operation::All || implying(operation).contains(&b.operation))
    });
    if allowed {
        Decision::Allowed
    } else {
        Decision::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.to_owned(),
            pattern_type,
            principal: principal.to_owned(),
            host: ANY_HOST.to_owned(),
            operation,
            permission,
        }
    }

    fn can(bindings: &[AclBinding], principal: &str, operation: Operation, topic: &str) -> bool {
        authorize(
            bindings,
            &["User:root".to_owned()],
            principal,
            "10.0.0.1",
            operation,
            ResourceType::Topic,
            topic,
        )
        .permits()
    }

    #[test]
    fn nothing_is_allowed_without_a_binding_but_to_superusers() {
        assert!(!can(&[], "User:alice", Operation::Read, "orders"));
        assert!(can(&[], "User:root", Operation::Delete, "orders"));
    }

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let bindings = [
            binding(
                ResourceType::Topic,
                "orders",
                Literal,
                "User:alice",
                Write,
                Allow,
            ),
            binding(
                ResourceType::Topic,
                "logs-",
                Prefixed,
                "User:bob",
                Read,
                Allow,
            ),
            binding(
                ResourceType::Topic,
                "*",
                Literal,
                "User:carol",
                Describe,
                Allow,
            ),
            binding(
                ResourceType::Topic,
                "public",
                Literal,
                ANY_PRINCIPAL,
                Read,
                Allow,
            ),
        ];
        assert!(can(&bindings, "User:alice", Write, "orders"));
        assert!(
            !can(&bindings, "User:alice", Write, "orders-eu"),
            "literal is exact"
        );
        assert!(!can(&bindings, "User:alice", Read, "orders"));
        assert!(
            can(&bindings, "User:alice", Describe, "orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(can(&bindings, "User:bob", Read, "logs-web"));
        assert!(
            !can(&bindings, "User:bob", Read, "log"),
            "a prefix matches names that start with it"
        );
        assert!(can(&bindings, "User:carol", Describe, "anything"));
        assert!(!can(&bindings, "User:carol", Read, "anything"));
        assert!(
            can(&bindings, "User:dave", Read, "public"),
            "User:* is everyone"
        );
        // Another resource type is another resource.
        assert!(
            !authorize(
                &bindings,
                &[],
                "User:alice",
                "h",
                Write,
                ResourceType::Group,
                "orders"
            )
            .permits()
        );
    }

    #[test]
    fn a_deny_overrides_an_allow() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let bindings = [
            binding(ResourceType::Topic, "*", Literal, ANY_PRINCIPAL, All, Allow),
            binding(
                ResourceType::Topic,
                "secret-",
                Prefixed,
                "User:mallory",
                Read,
                Deny,
            ),
            binding(
                ResourceType::Topic,
                "audit",
                Literal,
                ANY_PRINCIPAL,
                All,
                Deny,
            ),
        ];
        assert!(can(&bindings, "User:mallory", Read, "orders"));
        assert!(!can(&bindings, "User:mallory", Read, "secret-keys"));
        assert!(
            can(&bindings, "User:mallory", Describe, "secret-keys"),
            "a deny of READ does not deny DESCRIBE"
        );
        assert!(
            !can(&bindings, "User:alice", Describe, "audit"),
            "a deny of ALL denies all"
        );
        assert_eq!(
            authorize(
                &bindings,
                &["User:root".to_owned()],
                "User:root",
                "h",
                Read,
                ResourceType::Topic,
                "audit"
            ),
            Decision::Superuser
        );
    }

    #[test]
    fn hosts_narrow_a_binding() {
        let mut only_there = binding(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        );
        only_there.host = "10.0.0.9".to_owned();
        let bindings = [only_there];
        assert!(
            !can(&bindings, "User:alice", Operation::Read, "orders"),
            "from 10.0.0.1"
        );
        assert!(
            authorize(
                &bindings,
                &[],
                "User:alice",
                "10.0.0.9",
                Operation::Read,
                ResourceType::Topic,
                "orders"
            )
            .permits()
        );
    }

    #[test]
    fn alter_configs_implies_describe_configs_and_not_the_reverse() {
        let bindings = [binding(
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
            "User:ops",
            Operation::AlterConfigs,
            Permission::Allow,
        )];
        let on_cluster = |operation| {
            authorize(
                &bindings,
                &[],
                "User:ops",
                "h",
                operation,
                ResourceType::Cluster,
                "kafka-cluster",
            )
            .permits()
        };
        assert!(on_cluster(Operation::DescribeConfigs));
        assert!(on_cluster(Operation::AlterConfigs));
        assert!(!on_cluster(Operation::Alter));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn operation() -> impl Strategy<Value = Operation> {
            prop::sample::select(vec![
                Operation::All,
                Operation::Read,
                Operation::Write,
                Operation::Create,
                Operation::Delete,
                Operation::Alter,
                Operation::Describe,
                Operation::DescribeConfigs,
                Operation::AlterConfigs,
            ])
        }

        fn binding() -> impl Strategy<Value = AclBinding> {
            (
                prop::sample::select(vec!["*", "a", "ab", "b"]),
                any::<bool>(),
                prop::sample::select(vec![ANY_PRINCIPAL, "User:x", "User:y"]),
                operation(),
                any::<bool>(),
            )
                .prop_map(|(name, prefixed, principal, operation, allow)| AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: name.to_owned(),
                    pattern_type: if prefixed {
                        PatternType::Prefixed
                    } else {
                        PatternType::Literal
                    },
                    principal: principal.to_owned(),
                    host: ANY_HOST.to_owned(),
                    operation,
                    permission: if allow {
                        Permission::Allow
                    } else {
                        Permission::Deny
                    },
                })
        }

        proptest! {
            /// A deny of the operation on the resource for the principal always wins, and an
            /// added allow never turns a permitted request into a refused one.
            #[test]
            fn denies_win_and_allows_only_add(
                bindings in prop::collection::vec(binding(), 0..12),
                extra in binding(),
                asked in operation(),
                topic in prop::sample::select(vec!["a", "ab", "abc", "b"]),
            ) {
                let decide = |bindings: &[AclBinding]| {
                    authorize(bindings, &[], "User:x", "h", asked, ResourceType::Topic, topic)
                        .permits()
                };
                let mut with_deny = bindings.clone();
                with_deny.push(AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: topic.to_owned(),
                    pattern_type: PatternType::Literal,
                    principal: "User:x".to_owned(),
                    host: ANY_HOST.to_owned(),
                    operation: asked,
                    permission: Permission::Deny,
                });
                prop_assert!(!decide(&with_deny));
                if extra.permission == Permission::Allow && decide(&bindings) {
                    let mut more = bindings.clone();
                    more.push(extra);
                    prop_assert!(decide(&more));
                }
            }
        }
    }
}
