//! CreateAcls (30), DescribeAcls (29) and DeleteAcls (31): the cluster's access control bindings
//! as Kafka's admin clients see and change them, with Kafka's numbers for resource types,
//! pattern types, operations and permissions. Changes go through the controller; describing
//! reads this node's view of the metadata. Behaviour: `docs/protocol/security.md`.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::acls::{
    ACLS_PER_COMMAND_MAX, AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission,
    ResourceType,
};
use quipu_node::{ControllerRequest, Principal};

use crate::admin::{Refusal, cluster_denied, from_controller, text};
use crate::server::Context;

/// Kafka's `ANY` in filters.
const ANY: i8 = 1;
/// Kafka's `MATCH` pattern type (filters only).
const MATCH: i8 = 2;

fn resource_type_number(t: ResourceType) -> i8 {
    match t {
        ResourceType::Topic => 2,
        ResourceType::Group => 3,
        ResourceType::Cluster => 4,
        ResourceType::TransactionalId => 5,
    }
}

fn pattern_number(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

fn operation_number(o: Operation) -> i8 {
    match o {
        Operation::All => 2,
        Operation::Read => 3,
        Operation::Write => 4,
        Operation::Create => 5,
        Operation::Delete => 6,
        Operation::Alter => 7,
        Operation::Describe => 8,
        Operation::ClusterAction => 9,
        Operation::DescribeConfigs => 10,
        Operation::AlterConfigs => 11,
        Operation::IdempotentWrite => 12,
    }
}

fn permission_number(p: Permission) -> i8 {
    match p {
        Permission::Deny => 2,
        Permission::Allow => 3,
    }
}

/// The value of Kafka number `n` among `values`, by `number`.
fn of_number<T: Copy>(values: &[T], number: impl Fn(T) -> i8, n: i8) -> Option<T> {
    values.iter().copied().find(|v| number(*v) == n)
}

fn invalid(what: &str, n: i8) -> Refusal {
    (
        ResponseError::InvalidRequest,
        format!("{what} {n} is not one this cluster stores"),
    )
}

/// A binding to create, from Kafka's numbers.
fn binding_of(c: &AclCreation) -> Result<AclBinding, Refusal> {
    let binding = AclBinding {
        resource_type: of_number(
            ResourceType::ALL_VALUES,
            resource_type_number,
            c.resource_type,
        )
        .ok_or_else(|| invalid("resource type", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: of_number(
            PatternType::ALL_VALUES,
            pattern_number,
            c.resource_pattern_type,
        )
        .ok_or_else(|| invalid("pattern type", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: of_number(Operation::ALL_VALUES, operation_number, c.operation)
            .ok_or_else(|| invalid("operation", c.operation))?,
        permission: of_number(Permission::ALL_VALUES, permission_number, c.permission_type)
            .ok_or_else(|| invalid("permission", c.permission_type))?,
    };
    binding
        .check()
        .map_err(|e| (ResponseError::InvalidRequest, e.to_string()))?;
    Ok(binding)
}

/// A filter's field: `None` for `ANY`, the value of a known number, else refused.
fn filter_field<T: Copy>(
    values: &[T],
    number: impl Fn(T) -> i8,
    n: i8,
    what: &str,
) -> Result<Option<T>, Refusal> {
    if n == ANY {
        return Ok(None);
    }
    of_number(values, number, n)
        .map(Some)
        .ok_or_else(|| invalid(what, n))
}

/// The fields of Kafka's `AclBindingFilter` (DescribeAcls' request and DeleteAcls' filters).
struct FilterFields<'a> {
    resource_type: i8,
    resource_name: Option<&'a StrBytes>,
    pattern_type: i8,
    principal: Option<&'a StrBytes>,
    host: Option<&'a StrBytes>,
    operation: i8,
    permission: i8,
}

fn filter_of(f: FilterFields<'_>) -> Result<AclFilter, Refusal> {
    let pattern = match f.pattern_type {
        ANY => PatternFilter::Any,
        MATCH => PatternFilter::Match,
        n => PatternFilter::Exactly(
            of_number(PatternType::ALL_VALUES, pattern_number, n)
                .ok_or_else(|| invalid("pattern type", n))?,
        ),
    };
    Ok(AclFilter {
        resource_type: filter_field(
            ResourceType::ALL_VALUES,
            resource_type_number,
            f.resource_type,
            "resource type",
        )?,
        resource_name: f.resource_name.map(ToString::to_string),
        pattern,
        principal: f.principal.map(ToString::to_string),
        host: f.host.map(ToString::to_string),
        operation: filter_field(
            Operation::ALL_VALUES,
            operation_number,
            f.operation,
            "operation",
        )?,
        permission: filter_field(
            Permission::ALL_VALUES,
            permission_number,
            f.permission,
            "permission",
        )?,
    })
}

fn matching(context: &Context, filter: &AclFilter) -> Vec<AclBinding> {
    context.node.with_metadata(|m| {
        m.acls()
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    })
}

/// CreateAcls: ALTER on the cluster; each creation checked on its own, the valid ones created
/// together through the controller.
pub(crate) async fn create(
    context: &Context,
    who: &Principal,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let checked: Vec<Result<AclBinding, Refusal>> =
        if context.node.authorize_cluster(who, Operation::Alter) {
            request.creations.iter().map(binding_of).collect()
        } else {
            request
                .creations
                .iter()
                .map(|_| Err(cluster_denied()))
                .collect()
        };
    let valid: Vec<AclBinding> = checked.iter().flatten().cloned().collect();
    let mut outcome: Result<(), Refusal> = Ok(());
    for chunk in valid.chunks(ACLS_PER_COMMAND_MAX) {
        let request = ControllerRequest::CreateAcls {
            bindings: chunk.to_vec(),
        };
        if let Err(e) = context.node.request_controller(request).await {
            outcome = Err(from_controller(e));
            break;
        }
    }
    let results = checked
        .into_iter()
        .map(|c| match c.and_then(|_| outcome.clone()) {
            Ok(()) => AclCreationResult::default(),
            Err((code, message)) => AclCreationResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(text(message))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// DescribeAcls: DESCRIBE on the cluster; the bindings the filter selects, by resource.
pub(crate) fn describe(
    context: &Context,
    who: &Principal,
    request: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refused = |(code, message): Refusal| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)))
    };
    if !context.node.authorize_cluster(who, Operation::Describe) {
        return refused(cluster_denied());
    }
    let filter = match filter_of(FilterFields {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.as_ref(),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.as_ref(),
        host: request.host_filter.as_ref(),
        operation: request.operation,
        permission: request.permission_type,
    }) {
        Ok(filter) => filter,
        Err(refusal) => return refused(refusal),
    };
    let mut resources: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for b in matching(context, &filter) {
        resources
            .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(text(b.principal))
                    .with_host(text(b.host))
                    .with_operation(operation_number(b.operation))
                    .with_permission_type(permission_number(b.permission)),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((resource_type, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type_number(resource_type))
                .with_resource_name(text(name))
                .with_pattern_type(pattern_number(pattern))
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

/// DeleteAcls: ALTER on the cluster; every binding any filter selects is deleted through the
/// controller, and each filter's answer lists the ones it selected.
pub(crate) async fn delete(
    context: &Context,
    who: &Principal,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let allowed = context.node.authorize_cluster(who, Operation::Alter);
    let selected: Vec<Result<Vec<AclBinding>, Refusal>> = request
        .filters
        .iter()
        .map(|f: &DeleteAclsFilter| {
            if !allowed {
                return Err(cluster_denied());
            }
            let filter = filter_of(FilterFields {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.as_ref(),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.as_ref(),
                host: f.host_filter.as_ref(),
                operation: f.operation,
                permission: f.permission_type,
            })?;
            Ok(matching(context, &filter))
        })
        .collect();
    let mut doomed: Vec<AclBinding> = selected.iter().flatten().flatten().cloned().collect();
    doomed.sort();
    doomed.dedup();
    let mut outcome: Result<(), Refusal> = Ok(());
    for chunk in doomed.chunks(ACLS_PER_COMMAND_MAX) {
        let request = ControllerRequest::DeleteAcls {
            bindings: chunk.to_vec(),
        };
        if let Err(e) = context.node.request_controller(request).await {
            outcome = Err(from_controller(e));
            break;
        }
    }
    let results = selected
        .into_iter()
        .map(|s| match s.and_then(|b| outcome.clone().map(|()| b)) {
            Ok(bindings) => DeleteAclsFilterResult::default().with_matching_acls(
                bindings
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(resource_type_number(b.resource_type))
                            .with_resource_name(text(b.resource_name))
                            .with_pattern_type(pattern_number(b.pattern_type))
                            .with_principal(text(b.principal))
                            .with_host(text(b.host))
                            .with_operation(operation_number(b.operation))
                            .with_permission_type(permission_number(b.permission))
                    })
                    .collect(),
            ),
            Err((code, message)) => DeleteAclsFilterResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(text(message))),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_has_its_kafka_number_and_back() {
        for t in ResourceType::ALL_VALUES {
            assert_eq!(
                of_number(
                    ResourceType::ALL_VALUES,
                    resource_type_number,
                    resource_type_number(*t)
                ),
                Some(*t)
            );
        }
        for o in Operation::ALL_VALUES {
            assert_eq!(
                of_number(
                    Operation::ALL_VALUES,
                    operation_number,
                    operation_number(*o)
                ),
                Some(*o)
            );
        }
        assert_eq!(operation_number(Operation::IdempotentWrite), 12);
        assert_eq!(resource_type_number(ResourceType::TransactionalId), 5);
        let filter = filter_of(FilterFields {
            resource_type: ANY,
            resource_name: None,
            pattern_type: MATCH,
            principal: None,
            host: None,
            operation: 0,
            permission: ANY,
        });
        assert!(filter.is_err(), "UNKNOWN is no filter");
    }
}
