//! `quipu.v1.Admin`: topics and the cluster.

use quipu_node::{ControllerRequest, NodeHandle};
use quipu_proto::v1::admin_server::Admin;
use quipu_proto::v1::{
    AddPartitionsRequest, AddPartitionsResponse, AlterTopicConfigRequest, AlterTopicConfigResponse,
    ClusterDescription, ConfigEntry, CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest,
    DeleteTopicResponse, DescribeClusterRequest, DescribeTopicRequest, DrainNodeRequest,
    DrainNodeResponse, ElectPreferredLeadersRequest, ElectPreferredLeadersResponse, FollowerLag,
    HealthRequest, HealthResponse, ListTopicsRequest, ListTopicsResponse, MovePartitionRequest,
    MovePartitionResponse, NodeDescription, PartitionDescription, PartitionMove, RebalanceRequest,
    RebalanceResponse, RemoveNodeRequest, RemoveNodeResponse, TopicConfig, TopicDescription,
};
use quipu_proto::v1::{
    AlterUsersRequest, AlterUsersResponse, CreateAclsRequest, CreateAclsResponse,
    DeleteAclsRequest, DeleteAclsResponse, ListAclsRequest, ListAclsResponse, ListUsersRequest,
    ListUsersResponse, ScramMechanism, UserCredentialInfo, UserInfo,
};
use tonic::{Request, Response, Status};

use crate::acls;
use crate::auth::Gate;
use crate::error::{from_controller, invalid, invalid_config, unknown_topic};
use quipu_meta::acls::{Operation, ResourceType};

/// The Admin service of one node.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub node: NodeHandle,
    pub gate: std::sync::Arc<Gate>,
}

/// Settings from a request, each key and value checked.
fn config_from_proto(config: Option<TopicConfig>) -> Result<quipu_meta::TopicConfig, Status> {
    let config = config.unwrap_or_default();
    quipu_meta::TopicConfig::from_pairs(
        config
            .entries
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )
    .map_err(|e| invalid_config(e.to_string()))
}

fn config_to_proto(config: &quipu_meta::TopicConfig) -> TopicConfig {
    TopicConfig {
        entries: config
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

/// Every setting in effect for `topic` on this node, by name.
fn effective_config(node: &NodeHandle, topic: &quipu_meta::TopicInfo) -> Vec<ConfigEntry> {
    let settings = topic.config.settings(&node.topic_defaults());
    quipu_meta::TopicKey::ALL
        .into_iter()
        .map(|key| ConfigEntry {
            name: key.name().to_string(),
            value: settings.text(key),
            is_default: topic.config.get(key).is_none(),
        })
        .collect()
}

impl AdminService {
    async fn change(&self, request: ControllerRequest) -> Result<(), Status> {
        self.node
            .request_controller(request)
            .await
            .map_err(|e| from_controller(&self.node, e))
    }

    /// A topic as this node sees it; partitions it leads carry offsets and follower lag.
    fn describe(&self, topic: &quipu_meta::TopicInfo) -> TopicDescription {
        let partitions = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(number, assignment)| {
                let replica = self.node.partition(quipu_node::GroupId(assignment.group));
                let mut description = PartitionDescription {
                    partition: u32::try_from(number).unwrap_or(u32::MAX),
                    group: assignment.group,
                    replicas: assignment.replicas.clone(),
                    leader: replica.as_ref().and_then(|p| p.leader()),
                    target_replicas: assignment.target.clone().unwrap_or_default(),
                    leaving_replicas: assignment.leaving.clone(),
                    ..PartitionDescription::default()
                };
                if let Some(p) = replica.filter(|p| p.is_leader()) {
                    description.log_start_offset = Some(p.log_start_offset().0);
                    description.high_watermark = Some(p.high_watermark().0);
                    description.log_end_offset = Some(p.log_end_offset().0);
                    description.followers = p
                        .follower_lag()
                        .into_iter()
                        .map(|(node_id, lag_entries)| FollowerLag {
                            node_id,
                            lag_entries,
                            lag_bytes: p.estimated_bytes(lag_entries),
                        })
                        .collect();
                }
                description
            })
            .collect();
        TopicDescription {
            name: topic.name.clone(),
            replication_factor: u32::try_from(topic.replication_factor).unwrap_or(u32::MAX),
            config: Some(config_to_proto(&topic.config)),
            partitions,
            effective_config: effective_config(&self.node, topic),
            internal: topic.name == quipu_groups::OFFSETS_TOPIC,
        }
    }
}

fn count(value: u32, what: &str) -> Result<usize, Status> {
    if value == 0 {
        return Err(invalid(format!("{what} must be at least 1")));
    }
    usize::try_from(value).map_err(|_| invalid(format!("{what} {value} is too large")))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let request = request.into_inner();
        // CREATE on the cluster, or on the topic.
        if !self.gate.may(
            &who,
            Operation::Create,
            ResourceType::Cluster,
            quipu_meta::acls::CLUSTER_RESOURCE,
        ) {
            self.gate.topic(&who, Operation::Create, &request.name)?;
        }
        self.change(ControllerRequest::CreateTopic {
            name: request.name,
            partitions: count(request.partitions, "the partition count")?,
            replication_factor: count(request.replication_factor, "the replication factor")?,
            config: config_from_proto(request.config)?,
        })
        .await?;
        Ok(Response::new(CreateTopicResponse {}))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.gate
            .topic_caller(&request, Operation::Delete, &request.get_ref().name)
            .await?;
        self.change(ControllerRequest::DeleteTopic {
            name: request.into_inner().name,
        })
        .await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let include_internal = request.into_inner().include_internal;
        let metadata = self.node.metadata();
        let topics = metadata
            .topics()
            .filter(|t| include_internal || t.name != quipu_groups::OFFSETS_TOPIC)
            .filter(|t| {
                self.gate
                    .may(&who, Operation::Describe, ResourceType::Topic, &t.name)
            })
            .map(|t| self.describe(t))
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        self.gate
            .topic_caller(&request, Operation::Describe, &request.get_ref().name)
            .await?;
        let name = request.into_inner().name;
        let metadata = self.node.metadata();
        let topic = metadata.topic(&name).ok_or_else(|| unknown_topic(&name))?;
        Ok(Response::new(self.describe(topic)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        self.gate
            .topic_caller(&request, Operation::AlterConfigs, &request.get_ref().name)
            .await?;
        let request = request.into_inner();
        self.change(ControllerRequest::AlterTopicConfig {
            name: request.name,
            set: request.set.into_iter().collect(),
            reset: request.reset,
            replace: false,
        })
        .await?;
        Ok(Response::new(AlterTopicConfigResponse {}))
    }

    async fn add_partitions(
        &self,
        request: Request<AddPartitionsRequest>,
    ) -> Result<Response<AddPartitionsResponse>, Status> {
        self.gate
            .topic_caller(&request, Operation::Alter, &request.get_ref().name)
            .await?;
        let request = request.into_inner();
        self.change(ControllerRequest::AddPartitions {
            name: request.name,
            count: count(request.count, "the number of partitions to add")?,
        })
        .await?;
        Ok(Response::new(AddPartitionsResponse {}))
    }

    async fn describe_cluster(
        &self,
        request: Request<DescribeClusterRequest>,
    ) -> Result<Response<ClusterDescription>, Status> {
        // Anyone may describe the cluster (as Kafka's Metadata), but credentials that are
        // sent must be right.
        self.gate.principal(&request).await?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let nodes: Vec<NodeDescription> = self
            .node
            .cluster_nodes()
            .into_iter()
            .map(|n| NodeDescription {
                node_id: n.id,
                api_addr: n.api_addr,
                raft_addr: n.raft_addr,
                alive: n.alive,
                joining: n.state == "joining",
                state: n.state.to_string(),
                controller_role: n.controller_role.to_string(),
                rack: n.rack,
                kafka_addr: n.kafka_addr,
                replicas: count(n.replicas),
                preferred_leaders: count(n.preferred_leaders),
            })
            .collect();
        Ok(Response::new(ClusterDescription {
            nodes,
            controller_leader: self.node.controller_leader(),
            answering_node: self.node.id(),
        }))
    }

    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.gate.principal(&request).await?;
        let readiness = self.node.readiness();
        let not_ready_because = readiness.not_ready_because();
        Ok(Response::new(HealthResponse {
            node_id: readiness.node_id,
            controller_available: readiness.controller_leader.is_some(),
            replicas: u32::try_from(readiness.open_replicas).unwrap_or(u32::MAX),
            failed_replicas: u32::try_from(readiness.failed_replicas).unwrap_or(u32::MAX),
            ready: not_ready_because.is_empty(),
            not_ready_because,
        }))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let id = request.into_inner().node_id;
        self.change(ControllerRequest::DrainNode { id }).await?;
        Ok(Response::new(DrainNodeResponse {}))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let request = request.into_inner();
        self.change(ControllerRequest::RemoveNode {
            id: request.node_id,
            force: request.force,
        })
        .await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn move_partition(
        &self,
        request: Request<MovePartitionRequest>,
    ) -> Result<Response<MovePartitionResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let request = request.into_inner();
        if request.replicas.len() > REPLICAS_MAX {
            return Err(invalid(format!(
                "{} replicas: at most {REPLICAS_MAX}",
                request.replicas.len()
            )));
        }
        self.change(ControllerRequest::MovePartition {
            topic: request.topic,
            partition: request.partition,
            replicas: request.replicas,
        })
        .await?;
        Ok(Response::new(MovePartitionResponse {}))
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        // A plan only is a look at the cluster (DESCRIBE); carrying it out changes it (ALTER).
        let operation = if request.get_ref().execute {
            Operation::Alter
        } else {
            Operation::Describe
        };
        self.gate.cluster_caller(&request, operation).await?;
        let execute = request.into_inner().execute;
        let planned = self.node.plan_rebalance();
        let moves = self.node.with_metadata(|m| {
            planned
                .iter()
                .filter_map(|planned| {
                    let (topic, partition, assignment) = m.partition(planned.group)?;
                    Some(PartitionMove {
                        topic: topic.name.clone(),
                        partition,
                        replicas: assignment.replicas.clone(),
                        target_replicas: planned.replicas.clone(),
                    })
                })
                .collect()
        });
        let started = if execute {
            self.node
                .rebalance()
                .await
                .map_err(|e| from_controller(&self.node, e))?
        } else {
            0
        };
        Ok(Response::new(RebalanceResponse {
            moves,
            started: u32::try_from(started).unwrap_or(u32::MAX),
        }))
    }

    async fn elect_preferred_leaders(
        &self,
        request: Request<ElectPreferredLeadersRequest>,
    ) -> Result<Response<ElectPreferredLeadersResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let topic = request.into_inner().topic;
        let groups = if topic.is_empty() {
            None
        } else {
            let metadata = self.node.metadata();
            let info = metadata
                .topic(&topic)
                .ok_or_else(|| unknown_topic(&topic))?;
            Some(info.partitions.iter().map(|p| p.group).collect())
        };
        let elected = self.node.elect_leaders(groups).await;
        Ok(Response::new(ElectPreferredLeadersResponse {
            elected: u32::try_from(elected.asked.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn alter_users(
        &self,
        request: Request<AlterUsersRequest>,
    ) -> Result<Response<AlterUsersResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let request = request.into_inner();
        if request.upserts.len() + request.deletes.len() > USER_CHANGES_MAX {
            return Err(invalid(format!(
                "more than {USER_CHANGES_MAX} credential changes in one request"
            )));
        }
        let mut changes = Vec::new();
        for upsert in request.upserts {
            let mechanism = mechanism_of(upsert.mechanism)?;
            if upsert.salted_password.len() != mechanism.hash_len() {
                return Err(invalid(format!(
                    "a {} salted password is {} bytes, not {}",
                    mechanism.name(),
                    mechanism.hash_len(),
                    upsert.salted_password.len()
                )));
            }
            let credential = quipu_auth::credential_from_salted(
                mechanism,
                &upsert.salted_password,
                &upsert.salt,
                upsert.iterations,
            );
            credential
                .check(mechanism)
                .map_err(|e| invalid(e.to_string()))?;
            if !quipu_meta::valid_user_name(&upsert.user) {
                return Err(invalid(
                    quipu_meta::CredentialError::InvalidName.to_string(),
                ));
            }
            changes.push(ControllerRequest::UpsertScramCredential {
                user: upsert.user,
                mechanism,
                credential,
            });
        }
        for delete in request.deletes {
            changes.push(ControllerRequest::DeleteScramCredential {
                user: delete.user,
                mechanism: mechanism_of(delete.mechanism)?,
            });
        }
        for change in changes {
            self.node
                .request_controller(change)
                .await
                .map_err(|e| from_controller(&self.node, e))?;
        }
        Ok(Response::new(AlterUsersResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.gate
            .cluster_caller(&request, Operation::Describe)
            .await?;
        let users = self.node.with_metadata(|m| {
            m.users()
                .iter()
                .map(|(user, credentials)| UserInfo {
                    user: user.clone(),
                    credentials: credentials
                        .iter()
                        .map(|(mechanism, credential)| UserCredentialInfo {
                            mechanism: proto_mechanism(*mechanism) as i32,
                            iterations: credential.iterations,
                        })
                        .collect(),
                })
                .collect()
        });
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn create_acls(
        &self,
        request: Request<CreateAclsRequest>,
    ) -> Result<Response<CreateAclsResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let bindings = request
            .into_inner()
            .bindings
            .into_iter()
            .map(acls::binding_of)
            .collect::<Result<Vec<_>, _>>()?;
        acls::create(&self.node, bindings).await?;
        Ok(Response::new(CreateAclsResponse {}))
    }

    async fn delete_acls(
        &self,
        request: Request<DeleteAclsRequest>,
    ) -> Result<Response<DeleteAclsResponse>, Status> {
        self.gate.cluster_caller(&request, Operation::Alter).await?;
        let filters = request
            .into_inner()
            .filters
            .into_iter()
            .map(|f| acls::filter_of(Some(f)))
            .collect::<Result<Vec<_>, _>>()?;
        let deleted = acls::delete(&self.node, &filters).await?;
        Ok(Response::new(DeleteAclsResponse {
            deleted: deleted.iter().map(acls::to_proto).collect(),
        }))
    }

    async fn list_acls(
        &self,
        request: Request<ListAclsRequest>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        self.gate
            .cluster_caller(&request, Operation::Describe)
            .await?;
        let filter = acls::filter_of(request.into_inner().filter)?;
        let bindings = acls::selected(&self.node, &filter);
        Ok(Response::new(ListAclsResponse {
            bindings: bindings.iter().map(acls::to_proto).collect(),
        }))
    }
}

/// Most credential changes in one AlterUsers request.
const USER_CHANGES_MAX: usize = 1000;

fn mechanism_of(number: i32) -> Result<quipu_meta::ScramMechanism, Status> {
    match ScramMechanism::try_from(number) {
        Ok(ScramMechanism::Sha256) => Ok(quipu_meta::ScramMechanism::Sha256),
        Ok(ScramMechanism::Sha512) => Ok(quipu_meta::ScramMechanism::Sha512),
        _ => Err(invalid(format!("unknown SCRAM mechanism {number}"))),
    }
}

fn proto_mechanism(mechanism: quipu_meta::ScramMechanism) -> ScramMechanism {
    match mechanism {
        quipu_meta::ScramMechanism::Sha256 => ScramMechanism::Sha256,
        quipu_meta::ScramMechanism::Sha512 => ScramMechanism::Sha512,
    }
}

/// Most replicas a move may name (the metadata checks the exact count).
const REPLICAS_MAX: usize = 64;
