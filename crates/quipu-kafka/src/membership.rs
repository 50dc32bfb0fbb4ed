//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: classic group membership on the coordinator
//! (`NodeHandle::join_group` and the rest; `quipu_groups::ClassicGroup`). Assignments are the
//! clients' bytes, relayed unchanged. Behaviour: `docs/protocol/groups.md`.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use quipu_groups::GroupError;
use quipu_node::{CoordinatorError, JoinGroup};

use crate::error::{coordinator_error, group_error};
use crate::server::Context;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn code_of(error: &CoordinatorError) -> i16 {
    coordinator_error(error).code()
}

/// Who sent a JoinGroup: the request header's client id and the connection's address (as
/// Kafka shows it, `/ip`).
pub(crate) struct Client<'a> {
    pub id: &'a str,
    pub host: String,
}

pub(crate) async fn join_group(
    context: &Context,
    request: JoinGroupRequest,
    version: i16,
    client: Client<'_>,
) -> JoinGroupResponse {
    let join = JoinGroup {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id: client.id.to_string(),
        client_host: client.host,
        session_timeout_ms: request.session_timeout_ms,
        // JoinGroup v0 has no rebalance timeout: the session timeout stands in for it.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let response = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_protocol_name(Some(StrBytes::default()));
    match context.node.join_group(&request.group_id.0, join).await {
        Err(e) => {
            tracing::debug!(group = %request.group_id.0.as_str(), error = &e as &dyn std::error::Error, "join refused");
            response
                .with_error_code(code_of(&e))
                .with_member_id(request.member_id)
        }
        Ok(reply) => {
            let code = reply.error.as_ref().map_or(0, |e| group_error(e).code());
            let members = reply
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(text(id))
                        .with_metadata(metadata.into());
                    if version >= 5 {
                        member.with_group_instance_id(instance.map(text))
                    } else {
                        member
                    }
                })
                .collect();
            let response = response
                .with_error_code(code)
                .with_generation_id(reply.generation)
                .with_protocol_name(Some(text(reply.protocol_name.unwrap_or_default())))
                .with_leader(text(reply.leader))
                .with_member_id(text(reply.member_id))
                .with_members(members);
            if version >= 7 {
                response.with_protocol_type(reply.protocol_type.map(text))
            } else {
                response
            }
        }
    }
}

pub(crate) async fn sync_group(
    context: &Context,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let result = context
        .node
        .sync_group(
            &request.group_id.0,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            assignments,
        )
        .await;
    match result {
        Err(e) => {
            tracing::debug!(group = %request.group_id.0.as_str(), error = &e as &dyn std::error::Error, "sync refused");
            SyncGroupResponse::default().with_error_code(code_of(&e))
        }
        Ok(reply) => {
            let response = SyncGroupResponse::default().with_assignment(reply.assignment.into());
            if version >= 5 {
                response
                    .with_protocol_type(reply.protocol_type.map(text))
                    .with_protocol_name(reply.protocol_name.map(text))
            } else {
                response
            }
        }
    }
}

pub(crate) async fn heartbeat(context: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = context
        .node
        .heartbeat(
            &request.group_id.0,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        )
        .await;
    HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => 0,
        Err(e) => code_of(&e),
    })
}

pub(crate) async fn leave_group(
    context: &Context,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match context
        .node
        .leave_group(&request.group_id.0, &members)
        .await
    {
        Err(e) => LeaveGroupResponse::default().with_error_code(code_of(&e)),
        Ok(results) if version >= 3 => {
            let members = request
                .members
                .into_iter()
                .zip(results)
                .map(|(m, result)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(
                            result
                                .err()
                                .map_or(0, |e: GroupError| group_error(&e).code()),
                        )
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => LeaveGroupResponse::default().with_error_code(
            results
                .into_iter()
                .next()
                .and_then(Result::err)
                .map_or(0, |e| group_error(&e).code()),
        ),
    }
}
