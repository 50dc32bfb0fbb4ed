//! The ACL calls of `quipu.v1.Admin` (CreateAcls, DeleteAcls, ListAcls): bindings and filters
//! by their names (`quipu_meta::acls`), changed through the controller.

use quipu_meta::acls::{
    ACLS_PER_COMMAND_MAX, AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission,
    ResourceType,
};
use quipu_node::{ControllerRequest, NodeHandle};
use quipu_proto::v1;
use tonic::Status;

use crate::error::{from_controller, invalid};

/// The value named `name` of a field, or INVALID_ARGUMENT naming the field.
fn named<T>(name: &str, field: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, Status> {
    parse(name).ok_or_else(|| {
        invalid(format!(
            "{field} {:?} is not one of the names docs/protocol/security.md lists",
            quipu_meta::shown(name)
        ))
    })
}

fn optional<T>(
    name: Option<&String>,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Status> {
    name.map(|n| named(n, field, &parse)).transpose()
}

/// A binding from the API, checked as the metadata will check it.
pub(crate) fn binding_of(b: v1::AclBinding) -> Result<AclBinding, Status> {
    let binding = AclBinding {
        resource_type: named(&b.resource_type, "resource_type", ResourceType::from_name)?,
        resource_name: b.resource_name,
        pattern_type: named(&b.pattern_type, "pattern_type", PatternType::from_name)?,
        principal: b.principal,
        host: b.host,
        operation: named(&b.operation, "operation", Operation::from_name)?,
        permission: named(&b.permission, "permission", Permission::from_name)?,
    };
    binding.check().map_err(|e| invalid(e.to_string()))?;
    Ok(binding)
}

/// A filter from the API (none: every binding).
pub(crate) fn filter_of(f: Option<v1::AclFilter>) -> Result<AclFilter, Status> {
    let f = f.unwrap_or_default();
    let pattern = match f.pattern_type.as_deref() {
        None | Some("any") => PatternFilter::Any,
        Some("match") => PatternFilter::Match,
        Some(other) => {
            PatternFilter::Exactly(named(other, "pattern_type", PatternType::from_name)?)
        }
    };
    Ok(AclFilter {
        resource_type: optional(
            f.resource_type.as_ref(),
            "resource_type",
            ResourceType::from_name,
        )?,
        resource_name: f.resource_name,
        pattern,
        principal: f.principal,
        host: f.host,
        operation: optional(f.operation.as_ref(), "operation", Operation::from_name)?,
        permission: optional(f.permission.as_ref(), "permission", Permission::from_name)?,
    })
}

pub(crate) fn to_proto(b: &AclBinding) -> v1::AclBinding {
    v1::AclBinding {
        resource_type: b.resource_type.name().to_owned(),
        resource_name: b.resource_name.clone(),
        pattern_type: b.pattern_type.name().to_owned(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.name().to_owned(),
        permission: b.permission.name().to_owned(),
    }
}

/// The bindings `filter` selects on this node.
pub(crate) fn selected(node: &NodeHandle, filter: &AclFilter) -> Vec<AclBinding> {
    node.with_metadata(|m| {
        m.acls()
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    })
}

/// Creates `bindings` (at most one command's worth: all or none).
pub(crate) async fn create(node: &NodeHandle, bindings: Vec<AclBinding>) -> Result<(), Status> {
    if bindings.len() > ACLS_PER_COMMAND_MAX {
        return Err(invalid(format!(
            "{} bindings in one request: at most {ACLS_PER_COMMAND_MAX}",
            bindings.len()
        )));
    }
    node.request_controller(ControllerRequest::CreateAcls { bindings })
        .await
        .map_err(|e| from_controller(node, e))
}

/// Deletes every binding a filter selects; returns them.
pub(crate) async fn delete(
    node: &NodeHandle,
    filters: &[AclFilter],
) -> Result<Vec<AclBinding>, Status> {
    let mut doomed: Vec<AclBinding> = filters.iter().flat_map(|f| selected(node, f)).collect();
    doomed.sort();
    doomed.dedup();
    for chunk in doomed.chunks(ACLS_PER_COMMAND_MAX) {
        node.request_controller(ControllerRequest::DeleteAcls {
            bindings: chunk.to_vec(),
        })
        .await
        .map_err(|e| from_controller(node, e))?;
    }
    Ok(doomed)
}
