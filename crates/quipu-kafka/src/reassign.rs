//! Partition reassignments and leader elections: AlterPartitionReassignments (45),
//! ListPartitionReassignments (46) and ElectLeaders (43), mapped onto the controller's moves and
//! the nodes' preferred leader elections (`docs/protocol/membership.md`).

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use quipu_meta::acls::Operation;
use quipu_node::{ControllerRequest, Principal};

use crate::admin::{Refusal, cluster_denied, from_controller, text};
use crate::authorize;
use crate::metadata::broker_id;
use crate::server::Context;

/// Kafka's election types.
const PREFERRED: i8 = 0;

fn ids(brokers: &[BrokerId]) -> Result<Vec<u64>, Refusal> {
    brokers
        .iter()
        .map(|b| {
            u64::try_from(b.0).map_err(|_| {
                (
                    ResponseError::InvalidReplicaAssignment,
                    format!("broker id {} is not a node id", b.0),
                )
            })
        })
        .collect()
}

fn unknown(topic: &str, partition: i32) -> Refusal {
    (
        ResponseError::UnknownTopicOrPartition,
        format!(
            "unknown partition {partition} of topic {}",
            quipu_meta::shown(topic)
        ),
    )
}

/// Starts or cancels each partition's move: `replicas` moves it there (as many as the topic's
/// replication factor); none cancels the move under way (back to the replicas it had).
pub(crate) async fn alter_partition_reassignments(
    context: &Context,
    who: &Principal,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    if !authorize::cluster(context, who, Operation::Alter) {
        let (code, message) = cluster_denied();
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)));
    }
    let node = &context.node;
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let outcome: Result<(), Refusal> = async {
                let number = u32::try_from(index).map_err(|_| unknown(&name, index))?;
                let (replicas, factor, moving) = node
                    .with_metadata(|m| {
                        let t = m.topic(&name)?;
                        let p = t.partitions.get(number as usize)?;
                        Some((p.replicas.clone(), t.replication_factor, p.target.is_some()))
                    })
                    .ok_or_else(|| unknown(&name, index))?;
                let target = match &partition.replicas {
                    Some(list) => ids(list)?,
                    None if moving => replicas,
                    None => {
                        return Err((
                            ResponseError::NoReassignmentInProgress,
                            format!("partition {index} of {name} is not moving"),
                        ));
                    }
                };
                if target.len() != factor {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "{} replicas for a topic of replication factor {factor}: a move keeps the replication factor",
                            target.len()
                        ),
                    ));
                }
                node.request_controller(ControllerRequest::MovePartition {
                    topic: name.clone(),
                    partition: number,
                    replicas: target,
                })
                .await
                .map_err(|e| match from_controller(e) {
                    (ResponseError::InvalidRequest, message) => {
                        (ResponseError::InvalidReplicaAssignment, message)
                    }
                    other => other,
                })
            }
            .await;
            let mut result = ReassignablePartitionResponse::default().with_partition_index(index);
            if let Err((code, message)) = outcome {
                result.error_code = code.code();
                result.error_message = Some(text(message));
            }
            partitions.push(result);
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let mut response = AlterPartitionReassignmentsResponse::default().with_responses(responses);
    if version >= 1 {
        response.allow_replication_factor_change = false;
    }
    response
}

/// The moves under way (of the listed partitions, or all): each partition's replicas (the
/// target's, then those it takes away), the ones it adds and the ones it removes.
pub(crate) fn list_partition_reassignments(
    context: &Context,
    who: &Principal,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !authorize::cluster(context, who, Operation::Describe) {
        let (code, message) = cluster_denied();
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)));
    }
    let wanted: Option<HashMap<String, BTreeSet<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partition_indexes.into_iter().collect(),
                )
            })
            .collect()
    });
    let topics = context.node.with_metadata(|m| {
        let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
        for (topic, number, p) in m.reassignments() {
            let index = i32::try_from(number).unwrap_or(i32::MAX);
            if wanted
                .as_ref()
                .is_some_and(|w| !w.get(&topic.name).is_some_and(|w| w.contains(&index)))
            {
                continue;
            }
            let target = p.final_replicas();
            let adding: Vec<BrokerId> = target
                .iter()
                .filter(|n| !p.replicas.contains(n))
                .map(|n| broker_id(*n))
                .collect();
            let removing: Vec<BrokerId> = p.leaving.iter().map(|n| broker_id(*n)).collect();
            let replicas: Vec<BrokerId> = target
                .iter()
                .chain(p.leaving.iter())
                .map(|n| broker_id(*n))
                .collect();
            let ongoing = OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(replicas)
                .with_adding_replicas(adding)
                .with_removing_replicas(removing);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic.name) {
                Some(t) => t.partitions.push(ongoing),
                None => topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(text(topic.name.clone())))
                        .with_partitions(vec![ongoing]),
                ),
            }
        }
        topics
    });
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// Preferred leader elections (v0 asks for them only; v1+ names the type). An unclean election
/// is never made: Raft elects only a replica holding every committed record, so a partition
/// with a leader needs none and one without has no eligible replica.
pub(crate) async fn elect_leaders(
    context: &Context,
    who: &Principal,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let node = &context.node;
    if !authorize::cluster(context, who, Operation::Alter) {
        // Every partition asked for refused, and the whole request from v1 on.
        let results = request
            .topic_partitions
            .iter()
            .flatten()
            .map(|tp| {
                let refused = tp.partitions.iter().map(|at| {
                    PartitionResult::default()
                        .with_partition_id(*at)
                        .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                });
                ReplicaElectionResult::default()
                    .with_topic(tp.topic.clone())
                    .with_partition_result(refused.collect())
            })
            .collect();
        let response = ElectLeadersResponse::default().with_replica_election_results(results);
        return if version >= 1 {
            response.with_error_code(ResponseError::ClusterAuthorizationFailed.code())
        } else {
            response
        };
    }
    let preferred = version == 0 || request.election_type == PREFERRED;
    // (topic, partition, group if known).
    let asked: Vec<(TopicName, i32, Option<u64>)> =
        node.with_metadata(|m| match &request.topic_partitions {
            None => m
                .topics()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .zip(0i32..)
                        .map(|(p, at)| (TopicName(text(t.name.clone())), at, Some(p.group)))
                })
                .collect(),
            Some(list) => list
                .iter()
                .flat_map(|tp| {
                    let topic = m.topic(tp.topic.0.as_str());
                    tp.partitions.iter().map(move |at| {
                        let group = topic.and_then(|t| {
                            usize::try_from(*at)
                                .ok()
                                .and_then(|at| t.partitions.get(at))
                                .map(|p| p.group)
                        });
                        (tp.topic.clone(), *at, group)
                    })
                })
                .collect(),
        });
    let groups: Vec<u64> = asked.iter().filter_map(|(_, _, g)| *g).collect();
    let elected = if preferred && !groups.is_empty() {
        node.elect_leaders(Some(groups)).await
    } else {
        quipu_node::Elected::default()
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, group) in asked {
        let refusal: Option<(ResponseError, &str)> = match group {
            None => Some((
                ResponseError::UnknownTopicOrPartition,
                "unknown topic or partition",
            )),
            Some(g) if !preferred => {
                let led = node
                    .partition(quipu_node::GroupId(g))
                    .and_then(|p| p.leader());
                Some(if led.is_some() || elected.already.contains(&g) {
                    (
                        ResponseError::ElectionNotNeeded,
                        "the partition has a leader",
                    )
                } else {
                    (
                        ResponseError::EligibleLeadersNotAvailable,
                        "Raft elects only a replica holding every committed record",
                    )
                })
            }
            Some(g) if elected.asked.contains(&g) => None,
            Some(g) if elected.already.contains(&g) => Some((
                ResponseError::ElectionNotNeeded,
                "the preferred replica leads already",
            )),
            Some(_) => Some((
                ResponseError::PreferredLeaderNotAvailable,
                "the preferred replica is not a live, caught-up voter, or the partition has no leader",
            )),
        };
        let mut result = PartitionResult::default().with_partition_id(partition);
        if let Some((code, message)) = refusal {
            result.error_code = code.code();
            result.error_message = Some(text(message));
        }
        match results.iter_mut().find(|r| r.topic == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic)
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
