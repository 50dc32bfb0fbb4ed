//! `quipu acl create|delete|list`: the cluster's access control bindings (Kafka's ACLs), through
//! the gRPC API. Behaviour: `docs/protocol/security.md`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quipu_meta::acls::{
    AclBinding, AclFilter, CLUSTER_RESOURCE, Operation, PatternFilter, PatternType, Permission,
    ResourceType,
};

use crate::commands::Connection;
use crate::output::out;

/// The resource a binding or filter names: one of these flags.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Resource {
    /// A topic (or, with --prefixed, every topic whose name starts with this; * for all).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (or a prefix with --prefixed; * for all).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id (or a prefix with --prefixed; * for all).
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
}

impl Resource {
    fn named(&self) -> Option<(ResourceType, String)> {
        if let Some(name) = &self.topic {
            return Some((ResourceType::Topic, name.clone()));
        }
        if let Some(name) = &self.group {
            return Some((ResourceType::Group, name.clone()));
        }
        if let Some(name) = &self.transactional_id {
            return Some((ResourceType::TransactionalId, name.clone()));
        }
        self.cluster
            .then(|| (ResourceType::Cluster, CLUSTER_RESOURCE.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allows (or, with --deny, denies) a principal operations on a resource.
    ///
    /// Example: quipu acl create --principal User:alice --operation write --operation describe
    /// --topic logs- --prefixed
    Create {
        /// User:NAME, or User:* for everyone.
        #[arg(long)]
        principal: String,
        /// all, read, write, create, delete, alter, describe, cluster-action, describe-configs,
        /// alter-configs, idempotent-write (repeat for several).
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        #[command(flatten)]
        resource: Resource,
        /// The name is a prefix: the binding covers every resource whose name starts with it.
        #[arg(long)]
        prefixed: bool,
        /// The client address it applies to (default: any).
        #[arg(long, default_value = "*")]
        host: String,
        /// A DENY binding (it overrides every ALLOW); default: ALLOW.
        #[arg(long)]
        deny: bool,
    },
    /// Lists the bindings a filter selects (no flags: every binding).
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Deletes every binding a filter selects, and lists them.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Selects bindings: each flag given narrows the selection.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this principal's bindings.
    #[arg(long)]
    principal: Option<String>,
    #[command(flatten)]
    resource: Resource,
    /// How --topic/--group names match: any (default), match (every binding that applies to
    /// that name: literal, * and prefixes of it), literal, prefixed.
    #[arg(long, default_value = "any")]
    pattern: String,
    /// Only this operation's bindings.
    #[arg(long)]
    operation: Option<String>,
    /// Only this host's bindings.
    #[arg(long)]
    host: Option<String>,
    /// Only allow or only deny bindings.
    #[arg(long)]
    permission: Option<String>,
}

fn operation(name: &str) -> anyhow::Result<Operation> {
    Operation::from_name(name).with_context(|| {
        let names: Vec<&str> = Operation::ALL_VALUES.iter().map(|o| o.name()).collect();
        format!("unknown operation {name:?}: one of {}", names.join(", "))
    })
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<AclFilter> {
        let named = self.resource.named();
        let pattern = match self.pattern.as_str() {
            "any" => PatternFilter::Any,
            "match" => PatternFilter::Match,
            "literal" => PatternFilter::Exactly(PatternType::Literal),
            "prefixed" => PatternFilter::Exactly(PatternType::Prefixed),
            other => bail!("--pattern {other:?}: one of any, match, literal, prefixed"),
        };
        Ok(AclFilter {
            resource_type: named.as_ref().map(|(t, _)| *t),
            resource_name: named.map(|(_, name)| name),
            pattern,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.as_deref().map(operation).transpose()?,
            permission: self
                .permission
                .as_deref()
                .map(|p| {
                    Permission::from_name(p)
                        .with_context(|| format!("--permission {p:?}: allow or deny"))
                })
                .transpose()?,
        })
    }
}

fn print(bindings: &[AclBinding]) {
    out!(
        "{:<24} {:<16} {:<32} {:<9} {:<16} {:<16} PERMISSION",
        "PRINCIPAL",
        "RESOURCE",
        "NAME",
        "PATTERN",
        "OPERATION",
        "HOST"
    );
    for b in bindings {
        out!(
            "{:<24} {:<16} {:<32} {:<9} {:<16} {:<16} {}",
            b.principal,
            b.resource_type,
            b.resource_name,
            b.pattern_type,
            b.operation,
            b.host,
            b.permission
        );
    }
}

pub async fn acl(connection: &Connection, command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Create {
            principal,
            operations,
            resource,
            prefixed,
            host,
            deny,
        } => {
            let Some((resource_type, resource_name)) = resource.named() else {
                bail!("name the resource: --topic, --group, --transactional-id or --cluster");
            };
            let bindings = operations
                .iter()
                .map(|name| {
                    let binding = AclBinding {
                        resource_type,
                        resource_name: resource_name.clone(),
                        pattern_type: if prefixed {
                            PatternType::Prefixed
                        } else {
                            PatternType::Literal
                        },
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: operation(name)?,
                        permission: if deny {
                            Permission::Deny
                        } else {
                            Permission::Allow
                        },
                    };
                    binding.check()?;
                    Ok(binding)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let client = connection.connect().await?;
            client
                .create_acls(&bindings)
                .await
                .context("cannot create the ACLs")?;
            print(&bindings);
        }
        AclCommand::List { filter } => {
            let filter = filter.filter()?;
            let client = connection.connect().await?;
            print(&client.list_acls(&filter).await?);
        }
        AclCommand::Delete { filter } => {
            let filter = filter.filter()?;
            let client = connection.connect().await?;
            let deleted = client
                .delete_acls(&[filter])
                .await
                .context("cannot delete the ACLs")?;
            print(&deleted);
        }
    }
    Ok(())
}
