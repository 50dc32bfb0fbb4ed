//! DescribeGroups, ListGroups, DeleteGroups and OffsetDelete: the group coordinator's admin side
//! (`NodeHandle::describe_group` and the rest). Behaviour: `docs/protocol/groups.md`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::acls::Operation;
use quipu_node::{DeleteGroupError, OffsetDeleteRefused, Principal};

use crate::authorize;
use crate::error::coordinator_error;
use crate::server::Context;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn delete_error(error: &DeleteGroupError) -> ResponseError {
    match error {
        DeleteGroupError::Coordinator(e) => coordinator_error(e),
        DeleteGroupError::NotEmpty => ResponseError::NonEmptyGroup,
        DeleteGroupError::NotFound => ResponseError::GroupIdNotFound,
    }
}

pub(crate) async fn describe_groups(
    context: &Context,
    who: &Principal,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let described = DescribedGroup::default().with_group_id(group.clone());
        if !authorize::group(context, who, Operation::Describe, &group) {
            groups.push(described.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        let described = match context.node.describe_group(&group.0).await {
            Err(e) => described.with_error_code(coordinator_error(&e).code()),
            Ok(None) => {
                // Kafka's answer for a group it does not know: "Dead", an error from v6.
                let described = described.with_group_state(text("Dead"));
                if version >= 6 {
                    described.with_error_code(ResponseError::GroupIdNotFound.code())
                } else {
                    described
                }
            }
            Ok(Some(group)) => {
                let members = group
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(text(m.member_id))
                            .with_client_id(text(m.client_id))
                            .with_client_host(text(m.client_host))
                            .with_member_metadata(m.metadata.into())
                            .with_member_assignment(m.assignment.into());
                        if version >= 4 {
                            member.with_group_instance_id(m.instance_id.map(text))
                        } else {
                            member
                        }
                    })
                    .collect();
                described
                    .with_group_state(text(group.state))
                    .with_protocol_type(text(group.protocol_type))
                    .with_protocol_data(text(group.protocol))
                    .with_members(members)
            }
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// ListGroups: every group for a client with DESCRIBE on the cluster, else those it may
/// describe.
pub(crate) fn list_groups(
    context: &Context,
    who: &Principal,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let all = authorize::cluster(context, who, Operation::Describe);
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = context
        .node
        .list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.protocol))
        .filter(|g| all || authorize::group(context, who, Operation::Describe, &g.group))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(g.group)))
                .with_protocol_type(text(g.protocol_type));
            let listed = if version >= 4 {
                listed.with_group_state(text(g.state))
            } else {
                listed
            };
            if version >= 5 {
                listed.with_group_type(text(g.protocol))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn delete_groups(
    context: &Context,
    who: &Principal,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        if !authorize::group(context, who, Operation::Delete, &group) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let code = match context.node.delete_group(&group.0).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::debug!(group = %group.0.as_str(), error = &e as &dyn std::error::Error, "group not deleted");
                delete_error(&e).code()
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete: DELETE on the group, and READ on each topic (a topic the client may not read
/// is TOPIC_AUTHORIZATION_FAILED; the others are deleted).
pub(crate) async fn offset_delete(
    context: &Context,
    who: &Principal,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    if !authorize::group(context, who, Operation::Delete, &request.group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let readable: Vec<bool> = request
        .topics
        .iter()
        .map(|t| authorize::topic(context, who, Operation::Read, &t.name))
        .collect();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, readable)| **readable)
        .flat_map(|(t, _)| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let results = match context
        .node
        .delete_offsets(&request.group_id.0, &partitions)
        .await
    {
        Err(e) => return OffsetDeleteResponse::default().with_error_code(delete_error(&e).code()),
        Ok(results) => results,
    };
    let mut results = results.into_iter();
    let topics = request
        .topics
        .into_iter()
        .zip(readable)
        .map(|(t, readable)| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match readable.then(|| results.next()) {
                        None => ResponseError::TopicAuthorizationFailed.code(),
                        Some(next) => match next {
                            Some(Ok(())) => 0,
                            Some(Err(OffsetDeleteRefused::Subscribed)) => {
                                ResponseError::GroupSubscribedToTopic.code()
                            }
                            None => ResponseError::UnknownServerError.code(),
                        },
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
