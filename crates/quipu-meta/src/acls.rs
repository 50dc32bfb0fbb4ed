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
pub fn authorize<'a>(
    bindings: impl IntoIterator<Item = &'a AclBinding> + Clone,
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
            .clone()
            .into_iter()
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

/// The name of the cluster's one resource.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";
/// Most bindings a cluster holds.
pub const ACLS_MAX: usize = 10_000;
/// Longest resource name, principal or host of a binding, in bytes.
pub const ACL_FIELD_BYTES_MAX: usize = 256;
/// Most bindings one create or delete carries.
pub const ACLS_PER_COMMAND_MAX: usize = 1_000;

/// Why a binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// A principal that is not `User:NAME` (or `User:*`).
    #[error("invalid principal {0:?}: User:NAME or User:*")]
    Principal(String),
    /// An empty resource name.
    #[error("a binding needs a resource name")]
    EmptyResourceName,
    /// An empty host.
    #[error("a binding needs a host (an address, or * for any)")]
    EmptyHost,
    /// A field longer than [`ACL_FIELD_BYTES_MAX`], or with control characters.
    #[error("a binding's {0} is over {ACL_FIELD_BYTES_MAX} bytes or has control characters")]
    Field(&'static str),
    /// The cluster holds its most bindings.
    #[error("the cluster holds its most ACL bindings ({ACLS_MAX})")]
    TooMany,
    /// Too many bindings in one command.
    #[error("{0} bindings in one request (at most {ACLS_PER_COMMAND_MAX})")]
    TooManyInCommand(usize),
}

fn field_ok(field: &str) -> bool {
    field.len() <= ACL_FIELD_BYTES_MAX && !field.chars().any(char::is_control)
}

impl AclBinding {
    /// Checks the binding can be stored: a `User:` principal, a resource name and a host, each
    /// within [`ACL_FIELD_BYTES_MAX`] bytes.
    pub fn check(&self) -> Result<(), AclError> {
        for (name, field) in [
            ("resource name", &self.resource_name),
            ("principal", &self.principal),
            ("host", &self.host),
        ] {
            if !field_ok(field) {
                return Err(AclError::Field(name));
            }
        }
        if self.resource_name.is_empty() {
            return Err(AclError::EmptyResourceName);
        }
        if self.host.is_empty() {
            return Err(AclError::EmptyHost);
        }
        match self.principal.strip_prefix("User:") {
            Some(name) if !name.is_empty() => Ok(()),
            _ => Err(AclError::Principal(crate::shown(&self.principal))),
        }
    }
}

/// Which pattern types a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any.
    Any,
    /// Bindings that apply to the filter's resource name: literal ones naming it or `*`, and
    /// prefixed ones whose prefix it starts with (Kafka's MATCH).
    Match,
    /// Exactly this pattern type.
    Exactly(PatternType),
}

/// Selects bindings to describe or delete (Kafka's `AclBindingFilter`): each `None` matches
/// anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// The resource type.
    pub resource_type: Option<ResourceType>,
    /// The resource name (with [`PatternFilter::Match`], a resource the bindings apply to).
    pub resource_name: Option<String>,
    /// The pattern types.
    pub pattern: PatternFilter,
    /// The principal.
    pub principal: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The operation.
    pub operation: Option<Operation>,
    /// The permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether `binding` is one this filter selects.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        fn is<T: PartialEq>(wanted: Option<&T>, got: &T) -> bool {
            wanted.is_none_or(|w| w == got)
        }
        let name = match (self.pattern, &self.resource_name) {
            (_, None) => true,
            (PatternFilter::Match, Some(name)) => match binding.pattern_type {
                PatternType::Literal => {
                    binding.resource_name == *name || binding.resource_name == ANY_RESOURCE
                }
                PatternType::Prefixed => name.starts_with(&binding.resource_name),
            },
            (_, Some(name)) => binding.resource_name == *name,
        };
        let pattern = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Exactly(p) => binding.pattern_type == p,
        };
        name && pattern
            && is(self.resource_type.as_ref(), &binding.resource_type)
            && is(self.principal.as_ref(), &binding.principal)
            && is(self.host.as_ref(), &binding.host)
            && is(self.operation.as_ref(), &binding.operation)
            && is(self.permission.as_ref(), &binding.permission)
    }
}

/// Names as the CLI and the gRPC API spell them (lower case, `-` between words).
macro_rules! named {
    ($type:ty, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $type {
            /// Every value.
            pub const ALL_VALUES: &'static [$type] = &[$(<$type>::$variant),+];

            /// Its name.
            pub fn name(self) -> &'static str {
                match self { $(<$type>::$variant => $name),+ }
            }

            /// The value of a name (case and `_`/`-` ignored).
            pub fn from_name(name: &str) -> Option<$type> {
                let wanted = name.to_ascii_lowercase().replace('_', "-");
                Self::ALL_VALUES.iter().copied().find(|v| v.name() == wanted)
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named!(ResourceType,
    Topic => "topic", Group => "group", Cluster => "cluster", TransactionalId => "transactional-id");
named!(PatternType, Literal => "literal", Prefixed => "prefixed");
named!(Operation,
    All => "all", Read => "read", Write => "write", Create => "create", Delete => "delete",
    Alter => "alter", Describe => "describe", ClusterAction => "cluster-action",
    DescribeConfigs => "describe-configs", AlterConfigs => "alter-configs",
    IdempotentWrite => "idempotent-write");
named!(Permission, Allow => "allow", Deny => "deny");

/// Whether `principal` from `host` may do `operation` on some resource of `resource_type`
/// (Kafka's `authorizeByResourceType`, superusers aside): some binding allows it, and no literal
/// `*` binding denies it.
pub fn authorize_any<'a>(
    bindings: impl IntoIterator<Item = &'a AclBinding>,
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
) -> bool {
    let mut allowed = false;
    for b in bindings {
        if b.resource_type != resource_type || !b.concerns(principal, host) {
            continue;
        }
        match b.permission {
            Permission::Deny => {
                if (b.operation == operation || b.operation == Operation::All)
                    && b.pattern_type == PatternType::Literal
                    && b.resource_name == ANY_RESOURCE
                {
                    return false;
                }
            }
            Permission::Allow => {
                allowed |=
                    b.operation == Operation::All || implying(operation).contains(&b.operation);
            }
        }
    }
    allowed
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
    fn filters_select_as_kafka_does() {
        let bindings = [
            binding(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                "User:a",
                Operation::Read,
                Permission::Allow,
            ),
            binding(
                ResourceType::Topic,
                "*",
                PatternType::Literal,
                "User:b",
                Operation::Write,
                Permission::Allow,
            ),
            binding(
                ResourceType::Topic,
                "ord",
                PatternType::Prefixed,
                "User:c",
                Operation::Read,
                Permission::Deny,
            ),
            binding(
                ResourceType::Group,
                "orders",
                PatternType::Literal,
                "User:a",
                Operation::Read,
                Permission::Allow,
            ),
        ];
        let selected = |filter: &AclFilter| {
            bindings
                .iter()
                .enumerate()
                .filter(|(_, b)| filter.matches(b))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        assert_eq!(selected(&AclFilter::any()), [0, 1, 2, 3]);
        let named = |pattern| AclFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("orders".to_owned()),
            pattern,
            ..AclFilter::any()
        };
        assert_eq!(selected(&named(PatternFilter::Any)), [0]);
        assert_eq!(selected(&named(PatternFilter::Match)), [0, 1, 2]);
        assert_eq!(
            selected(&named(PatternFilter::Exactly(PatternType::Prefixed))),
            Vec::<usize>::new()
        );
        let denies = AclFilter {
            permission: Some(Permission::Deny),
            ..AclFilter::any()
        };
        assert_eq!(selected(&denies), [2]);
        let of_a = AclFilter {
            principal: Some("User:a".to_owned()),
            operation: Some(Operation::Read),
            ..AclFilter::any()
        };
        assert_eq!(selected(&of_a), [0, 3]);
    }

    #[test]
    fn bindings_are_checked_and_names_read_back() {
        let good = binding(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        assert_eq!(good.check(), Ok(()));
        let mut bad = good.clone();
        bad.principal = "Group:a".to_owned();
        assert!(matches!(bad.check(), Err(AclError::Principal(_))));
        let mut bad = good.clone();
        bad.host = String::new();
        assert_eq!(bad.check(), Err(AclError::EmptyHost));
        let mut bad = good;
        bad.resource_name = "x".repeat(ACL_FIELD_BYTES_MAX + 1);
        assert_eq!(bad.check(), Err(AclError::Field("resource name")));
        for op in Operation::ALL_VALUES {
            assert_eq!(Operation::from_name(op.name()), Some(*op));
        }
        assert_eq!(
            Operation::from_name("DESCRIBE_CONFIGS"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(
            ResourceType::from_name("transactional_id"),
            Some(ResourceType::TransactionalId)
        );
        assert_eq!(Permission::from_name("maybe"), None);
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
