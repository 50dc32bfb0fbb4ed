//! ConsumerGroupHeartbeat and ConsumerGroupDescribe: KIP-848 groups, whose partitions the
//! coordinator assigns (`NodeHandle::consumer_heartbeat`). Assignments travel by topic id.
//! Behaviour: `docs/protocol/groups.md`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as ReplyAssignment, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use quipu_groups::consumer::{Assignment, Heartbeat};
use quipu_meta::acls::Operation;
use quipu_node::Principal;
use uuid::Uuid;

use crate::authorize;
use crate::error::coordinator_error;
use crate::metadata::{topic_id, topic_named_by_id};
use crate::server::Context;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The Kafka topic id of `name` (nil if it does not exist).
fn id_of(context: &Context, name: &str) -> Uuid {
    context
        .node
        .with_metadata(|m| m.topic(name).map(topic_id))
        .unwrap_or(Uuid::nil())
}

/// ConsumerGroupHeartbeat: READ on the group, and DESCRIBE on every topic subscribed to.
pub(crate) async fn heartbeat(
    context: &Context,
    who: &Principal,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client: crate::membership::Client<'_>,
) -> ConsumerGroupHeartbeatResponse {
    let refuse = |error: ResponseError, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(text(message)))
            .with_member_epoch(-1)
    };
    if !authorize::group(context, who, Operation::Read, &request.group_id) {
        return refuse(
            ResponseError::GroupAuthorizationFailed,
            "Group authorization failed.".into(),
        );
    }
    let hidden = request
        .subscribed_topic_names
        .iter()
        .flatten()
        .filter(|t| !authorize::topic(context, who, Operation::Describe, t))
        .count();
    if hidden > 0 {
        return refuse(
            ResponseError::TopicAuthorizationFailed,
            format!("not authorized to describe {hidden} of the subscribed topics"),
        );
    }
    // KIP-1082: from v1 the client makes its member id.
    if version >= 1 && request.member_id.is_empty() {
        return refuse(
            ResponseError::InvalidRequest,
            "a member id is required from ConsumerGroupHeartbeat v1".into(),
        );
    }
    if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return refuse(
            ResponseError::InvalidRequest,
            "subscriptions by regular expression are not supported".into(),
        );
    }
    let owned = request.topic_partitions.map(|topics| {
        let mut owned = Assignment::new();
        for t in topics {
            if let Some(name) = topic_named_by_id(&context.node, t.topic_id) {
                owned.entry(name).or_default().extend(t.partitions);
            }
        }
        owned
    });
    let beat = Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|i| i.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topics: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        server_assignor: request.server_assignor.map(|a| a.to_string()),
        owned,
        client_id: client.id.to_string(),
        client_host: client.host,
    };
    match context
        .node
        .consumer_heartbeat(&request.group_id.0, beat)
        .await
    {
        Err(e) => refuse(coordinator_error(&e), e.to_string()),
        Ok((reply, interval)) => {
            let assignment = reply.assignment.map(|assignment| {
                let topics = assignment
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicPartitions::default()
                            .with_topic_id(id_of(context, &topic))
                            .with_partitions(partitions.into_iter().collect())
                    })
                    .collect();
                ReplyAssignment::default().with_topic_partitions(topics)
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(text(reply.member_id)))
                .with_member_epoch(reply.member_epoch)
                .with_heartbeat_interval_ms(interval)
                .with_assignment(assignment)
        }
    }
}

fn described_assignment(context: &Context, assignment: Assignment) -> describe::Assignment {
    let topics = assignment
        .into_iter()
        .map(|(topic, partitions)| {
            describe::TopicPartitions::default()
                .with_topic_id(id_of(context, &topic))
                .with_topic_name(TopicName(text(topic)))
                .with_partitions(partitions.into_iter().collect())
        })
        .collect();
    describe::Assignment::default().with_topic_partitions(topics)
}

pub(crate) async fn describe(
    context: &Context,
    who: &Principal,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group in request.group_ids {
        let described = DescribedGroup::default().with_group_id(group.clone());
        if !authorize::group(context, who, Operation::Describe, &group) {
            groups.push(described.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        let described = match context.node.describe_consumer_group(&group.0).await {
            Err(e) => described.with_error_code(coordinator_error(&e).code()),
            Ok(None) => described
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_group_state(text("Dead")),
            Ok(Some(g)) => {
                let members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        describe::Member::default()
                            .with_member_id(text(m.member_id))
                            .with_instance_id(m.instance_id.map(text))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(text(m.client_id))
                            .with_client_host(text(m.client_host))
                            .with_subscribed_topic_names(
                                m.subscribed_topics
                                    .into_iter()
                                    .map(|t| TopicName(text(t)))
                                    .collect(),
                            )
                            .with_assignment(described_assignment(context, m.assigned))
                            .with_target_assignment(described_assignment(context, m.target))
                    })
                    .collect();
                described
                    .with_group_state(text(g.state))
                    .with_group_epoch(g.group_epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(text(g.assignor))
                    .with_members(members)
            }
        };
        groups.push(described);
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
