//! `quipu.v1.Groups`: consumer groups through the same coordinator as Kafka clients'. Members
//! heartbeat as KIP-848 members (the coordinator assigns); offsets, listing, describing and
//! deleting as the Kafka admin APIs do. Behaviour: `docs/protocol/groups.md`.

use quipu_groups::consumer::{Assignment, Heartbeat};
use quipu_node::{DeleteGroupError, NodeHandle, OffsetCommit};
use quipu_proto::v1::groups_server::Groups;
use quipu_proto::v1::{
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset, DeleteGroupRequest,
    DeleteGroupResponse, DescribeGroupRequest, ErrorReason, FetchOffsetsRequest,
    FetchOffsetsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupDescription,
    GroupHeartbeatRequest, GroupHeartbeatResponse, GroupMember, ListGroupsRequest,
    ListGroupsResponse, ListedGroup, PartitionSet, TopicPartitions,
};
use tonic::{Code, Request, Response, Status};

use quipu_meta::acls::{Operation, ResourceType};

use crate::auth::Gate;
use crate::error::{from_coordinator, status};

/// The Groups service of one node.
#[derive(Debug, Clone)]
pub(crate) struct GroupsService {
    pub node: NodeHandle,
    pub gate: std::sync::Arc<Gate>,
}

fn to_assignment(set: PartitionSet) -> Assignment {
    let mut out = Assignment::new();
    for t in set.topics {
        out.entry(t.topic).or_default().extend(t.partitions);
    }
    out
}

fn to_set(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_delete(node: &NodeHandle, error: DeleteGroupError) -> Status {
    match error {
        DeleteGroupError::Coordinator(e) => from_coordinator(node, e),
        DeleteGroupError::NotEmpty => status(
            Code::FailedPrecondition,
            ErrorReason::GroupNotEmpty,
            "the group has members",
            None,
        ),
        DeleteGroupError::NotFound => status(
            Code::NotFound,
            ErrorReason::UnknownGroup,
            "no such group",
            None,
        ),
    }
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let group = request.into_inner().group;
        self.gate.group(&who, Operation::Describe, &group)?;
        let node = self
            .node
            .find_coordinator(&group)
            .await
            .map_err(|e| from_coordinator(&self.node, e))?;
        Ok(Response::new(FindCoordinatorResponse {
            node_id: node.id,
            api_addr: node.api_addr,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        let host = request
            .remote_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default();
        let who = self.gate.principal(&request).await?;
        let r = request.into_inner();
        self.gate.group(&who, Operation::Read, &r.group)?;
        for topic in r.subscribed_topics.iter().flat_map(|t| &t.names) {
            self.gate.topic(&who, Operation::Describe, topic)?;
        }
        let beat = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            instance_id: r.instance_id,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            subscribed_topics: r.subscribed_topics.map(|t| t.names),
            server_assignor: r.server_assignor,
            owned: r.owned.map(to_assignment),
            client_id: r.client_id,
            client_host: host,
        };
        let (reply, interval) = self
            .node
            .consumer_heartbeat(&r.group, beat)
            .await
            .map_err(|e| from_coordinator(&self.node, e))?;
        Ok(Response::new(GroupHeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            heartbeat_interval_ms: interval,
            assignment: reply
                .assignment
                .map(|a| PartitionSet { topics: to_set(&a) }),
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let r = request.into_inner();
        self.gate.group(&who, Operation::Read, &r.group)?;
        // READ on each topic: the others' offsets are refused one by one, the rest committed.
        let refused: Vec<Option<String>> = r
            .offsets
            .iter()
            .map(|o| {
                self.gate
                    .topic(&who, Operation::Read, &o.topic)
                    .err()
                    .map(|e| e.message().to_owned())
            })
            .collect();
        let offsets: Vec<OffsetCommit> = r
            .offsets
            .into_iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(o, _)| OffsetCommit {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                leader_epoch: -1,
                metadata: o.metadata,
            })
            .collect();
        let results = self
            .node
            .commit_offsets(&r.group, r.member_epoch, &r.member_id, None, &offsets)
            .await
            .map_err(|e| from_coordinator(&self.node, e))?;
        let mut results = results.into_iter();
        Ok(Response::new(CommitOffsetsResponse {
            errors: refused
                .into_iter()
                .map(|refused| match refused {
                    Some(message) => message,
                    None => results
                        .next()
                        .and_then(|r| r.err().map(|e| e.to_string()))
                        .unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let r = request.into_inner();
        self.gate.group(&who, Operation::Describe, &r.group)?;
        for topic in &r.partitions {
            self.gate.topic(&who, Operation::Describe, &topic.topic)?;
        }
        let partitions: Vec<(String, i32)> = r
            .partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
            .collect();
        let asked = (!partitions.is_empty()).then_some(partitions.as_slice());
        let offsets = self
            .node
            .fetch_offsets(&r.group, asked)
            .await
            .map_err(|e| from_coordinator(&self.node, e))?;
        // With no topics named, those the caller may not describe are left out.
        let offsets = offsets.into_iter().filter(|o| {
            self.gate
                .may(&who, Operation::Describe, ResourceType::Topic, &o.topic)
        });
        Ok(Response::new(FetchOffsetsResponse {
            offsets: offsets
                .map(|o| {
                    let (offset, metadata, at) = o.value.map_or((-1, String::new(), 0), |v| {
                        (v.offset, v.metadata, v.commit_timestamp_ms)
                    });
                    CommittedOffset {
                        topic: o.topic,
                        partition: o.partition,
                        offset,
                        metadata,
                        commit_timestamp_ms: at,
                    }
                })
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        // Every group with DESCRIBE on the cluster, else those the caller may describe.
        let who = self.gate.principal(&request).await?;
        let all = self.gate.cluster(&who, Operation::Describe).is_ok();
        Ok(Response::new(ListGroupsResponse {
            groups: self
                .node
                .list_groups()
                .into_iter()
                .filter(|g| {
                    all || self
                        .gate
                        .may(&who, Operation::Describe, ResourceType::Group, &g.group)
                })
                .map(|g| ListedGroup {
                    group: g.group,
                    protocol: g.protocol.to_string(),
                    state: g.state.to_string(),
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let who = self.gate.principal(&request).await?;
        let group = request.into_inner().group;
        self.gate.group(&who, Operation::Describe, &group)?;
        let error = |e| from_coordinator(&self.node, e);
        if let Some(g) = self
            .node
            .describe_consumer_group(&group)
            .await
            .map_err(error)?
        {
            return Ok(Response::new(GroupDescription {
                group,
                protocol: "consumer".into(),
                state: g.state.into(),
                epoch: g.group_epoch,
                assignor: g.assignor.into(),
                members: g
                    .members
                    .into_iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id,
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        epoch: m.member_epoch,
                        assignment: to_set(&m.assigned),
                    })
                    .collect(),
            }));
        }
        let Some(g) = self.node.describe_group(&group).await.map_err(error)? else {
            return Err(status(
                Code::NotFound,
                ErrorReason::UnknownGroup,
                format!("no group {group}"),
                None,
            ));
        };
        Ok(Response::new(GroupDescription {
            group,
            protocol: if g.protocol_type.is_empty() {
                String::new()
            } else {
                "classic".into()
            },
            state: g.state.into(),
            epoch: g.generation,
            assignor: g.protocol,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    epoch: -1,
                    assignment: to_set(&quipu_groups::assigned_partitions(&m.assignment)),
                })
                .collect(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        self.gate
            .group(&who, Operation::Delete, &request.get_ref().group)?;
        self.node
            .delete_group(&request.into_inner().group)
            .await
            .map_err(|e| from_delete(&self.node, e))?;
        Ok(Response::new(DeleteGroupResponse {}))
    }
}
