//! The admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs and DescribeCluster, as changes through the controller (or, with
//! `validate_only`, checks against this node's view without proposing anything).
//!
//! Topic configs go by their Kafka names (`quipu_meta::TopicKey`). One more is described and
//! accepted at the one value Quipu implements: `cleanup.policy=delete`; any other value, and any
//! other key, is `INVALID_CONFIG`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::acls::Operation;
use quipu_meta::{PARTITIONS_PER_TOPIC_MAX, TopicConfig, TopicKey};
use quipu_node::{ControllerError, ControllerRequest, NodeHandle, Principal};

use crate::authorize;

use crate::metadata::{default_replication_factor, host_port, topic_id, topic_named_by_id};
use crate::server::Context;

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// DescribeConfigs config types (KIP-569).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Kafka topic configs Quipu has one fixed value for: accepted at that value, described as it.
const FIXED: [(&str, &str); 1] = [("cleanup.policy", "delete")];

pub(crate) fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A refusal: the Kafka code and the message for the client.
pub(crate) type Refusal = (ResponseError, String);

/// The refusal of an operation on the cluster the client is not authorized for.
pub(crate) fn cluster_denied() -> Refusal {
    (
        ResponseError::ClusterAuthorizationFailed,
        "Cluster authorization failed.".to_owned(),
    )
}

/// The refusal of an operation on a topic the client is not authorized for.
pub(crate) fn topic_denied() -> Refusal {
    (
        ResponseError::TopicAuthorizationFailed,
        "Topic authorization failed.".to_owned(),
    )
}

pub(crate) fn from_controller(error: ControllerError) -> Refusal {
    let code = match &error {
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::NotLeader { .. } | ControllerError::Starting { .. } => {
            ResponseError::NotController
        }
        ControllerError::Unavailable(_) => ResponseError::RequestTimedOut,
        ControllerError::NotEnoughNodes { .. } => ResponseError::InvalidReplicationFactor,
        ControllerError::Plan(_) | ControllerError::Refused(_) => ResponseError::InvalidRequest,
        // A cluster policy refuses it (Kafka's create-topic policies answer the same).
        ControllerError::LimitExceeded(_) => ResponseError::PolicyViolation,
        ControllerError::InternalTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::NodeRemoved(_) | ControllerError::UnknownNode(_) => {
            ResponseError::BrokerNotAvailable
        }
        ControllerError::NodeHoldsReplicas(_) => ResponseError::InvalidRequest,
        // Only a joining node meets it; a client's request never does.
        ControllerError::OtherCluster(_) => ResponseError::InconsistentClusterId,
    };
    (code, error.to_string())
}

/// Carries out `request` (or only checks it).
async fn change(
    node: &NodeHandle,
    request: ControllerRequest,
    validate_only: bool,
) -> Result<(), Refusal> {
    let result = if validate_only {
        node.validate(&request)
    } else {
        node.request_controller(request).await
    };
    result.map_err(from_controller)
}

/// Kafka (name, value) pairs without the fixed configs, which are accepted at their one value
/// only. The rest are checked where they are planned (`TopicConfig`, by the controller).
fn settings(pairs: Vec<(String, Option<String>)>) -> Result<Vec<(String, String)>, Refusal> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        let value = value.unwrap_or_default();
        if let Some((_, fixed)) = FIXED.iter().find(|(key, _)| *key == name) {
            if value != *fixed {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("Quipu implements only {}={fixed}", quipu_meta::shown(&name)),
                ));
            }
            continue;
        }
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) async fn create_topics(
    context: &Context,
    who: &Principal,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let node = &context.node;
    let validate_only = request.validate_only;
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = match topic.num_partitions {
            -1 => context.config.default_partitions,
            n => usize::try_from(n).unwrap_or(0),
        };
        let replication_factor = match topic.replication_factor {
            -1 => default_replication_factor(context),
            n => usize::try_from(n).unwrap_or(0),
        };
        let outcome: Result<(), Refusal> = async {
            if !authorize::create_topic(context, who, &name) {
                return Err(topic_denied());
            }
            if !quipu_meta::valid_topic_name(&name) {
                return Err((
                    ResponseError::InvalidTopicException,
                    format!(
                        "invalid topic name {:?}: 1 to 249 characters of [a-zA-Z0-9._-]",
                        quipu_meta::shown(&name)
                    ),
                ));
            }
            if !topic.assignments.is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "Quipu places replicas itself; manual assignments are not supported"
                        .to_string(),
                ));
            }
            if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("partitions must be 1 to {PARTITIONS_PER_TOPIC_MAX}"),
                ));
            }
            // Above the registered nodes is the controller's to refuse: while the cluster forms,
            // it waits for the nodes that have not registered yet.
            if replication_factor == 0 {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    "replication factor must be at least 1".to_string(),
                ));
            }
            let pairs = settings(
                topic
                    .configs
                    .into_iter()
                    .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                    .collect(),
            )?;
            let config =
                TopicConfig::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
            let request = ControllerRequest::CreateTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                config,
            };
            change(node, request, validate_only).await
        }
        .await;
        let mut result = CreatableTopicResult::default().with_name(TopicName(text(name.clone())));
        match outcome {
            Ok(()) => {
                if version >= 5 {
                    result.num_partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
                    result.replication_factor =
                        i16::try_from(replication_factor).unwrap_or(i16::MAX);
                }
                if version >= 7
                    && let Some(id) = node.with_metadata(|m| m.topic(&name).map(topic_id))
                {
                    result.topic_id = id;
                }
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(text(message));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(crate) async fn delete_topics(
    context: &Context,
    who: &Principal,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let node = &context.node;
    // v6 names topics by name or id; earlier versions by name.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => (Some(name.0.to_string()), t.topic_id),
                None => (topic_named_by_id(node, t.topic_id), t.topic_id),
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let mut result = DeletableTopicResult::default();
        match &name {
            None => result.error_code = ResponseError::UnknownTopicId.code(),
            Some(name) if !authorize::topic(context, who, Operation::Delete, name) => {
                result.error_code = ResponseError::TopicAuthorizationFailed.code();
            }
            Some(name) => {
                let deleted_id = node.with_metadata(|m| m.topic(name).map(topic_id));
                if let Err((code, message)) = change(
                    node,
                    ControllerRequest::DeleteTopic { name: name.clone() },
                    false,
                )
                .await
                {
                    result.error_code = code.code();
                    if version >= 5 {
                        result.error_message = Some(text(message));
                    }
                }
                if version >= 6 {
                    result.topic_id = deleted_id.unwrap_or(id);
                }
            }
        }
        result.name = name.map(|n| TopicName(text(n)));
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) async fn create_partitions(
    context: &Context,
    who: &Principal,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = &context.node;
    let validate_only = request.validate_only;
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome: Result<(), Refusal> = async {
            if !authorize::topic(context, who, Operation::Alter, &name) {
                return Err(topic_denied());
            }
            if topic.assignments.is_some() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "Quipu places replicas itself; manual assignments are not supported"
                        .to_string(),
                ));
            }
            let current = node
                .with_metadata(|m| m.topic(&name).map(|t| t.partitions.len()))
                .ok_or_else(|| {
                    (
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic {}", quipu_meta::shown(&name)),
                    )
                })?;
            let wanted = usize::try_from(topic.count).unwrap_or(0);
            if wanted <= current {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("topic {name} has {current} partitions; the new count must be larger"),
                ));
            }
            let request = ControllerRequest::AddPartitions {
                name: name.clone(),
                count: wanted - current,
            };
            change(node, request, validate_only).await
        }
        .await;
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name);
        if let Err((code, message)) = outcome {
            result.error_code = code.code();
            result.error_message = Some(text(message));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// One described config entry.
fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(text(name))
        .with_value(Some(text(value)))
        .with_read_only(read_only)
        .with_config_source(source);
    if version >= 3 {
        result.config_type = config_type;
    }
    result
}

fn key_type(key: TopicKey) -> i8 {
    match key {
        TopicKey::SegmentBytes | TopicKey::MaxMessageBytes => TYPE_INT,
        TopicKey::TimestampType => TYPE_STRING,
        _ => TYPE_LONG,
    }
}

/// Every config of `topic` in effect on this node: its own values, the node's defaults, and the
/// fixed ones.
fn topic_configs(
    node: &NodeHandle,
    name: &str,
    version: i16,
) -> Option<Vec<DescribeConfigsResourceResult>> {
    let config = node.with_metadata(|m| m.topic(name).map(|t| t.config.clone()))?;
    let settings = config.settings(&node.topic_defaults());
    let mut entries: Vec<DescribeConfigsResourceResult> = TopicKey::ALL
        .into_iter()
        .map(|key| {
            let source = if config.get(key).is_some() {
                SOURCE_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            entry(
                key.name(),
                settings.text(key),
                source,
                key_type(key),
                false,
                version,
            )
        })
        .collect();
    entries.extend(FIXED.iter().map(|(key, value)| {
        entry(
            key,
            (*value).to_string(),
            SOURCE_DEFAULT,
            TYPE_STRING,
            true,
            version,
        )
    }));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Some(entries)
}

/// This node's settings under the Kafka broker config names that mean the same (read-only: they
/// come from `quipu.toml`).
fn broker_configs(context: &Context, version: i16) -> Vec<DescribeConfigsResourceResult> {
    let defaults = context.node.topic_defaults();
    let static_broker = |name: &str, value: String, config_type: i8| {
        entry(
            name,
            value,
            SOURCE_STATIC_BROKER,
            config_type,
            true,
            version,
        )
    };
    vec![
        static_broker(
            "auto.create.topics.enable",
            context.config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        static_broker(
            "default.replication.factor",
            context.config.default_replication_factor.to_string(),
            TYPE_INT,
        ),
        static_broker(
            "log.retention.bytes",
            defaults.value(TopicKey::RetentionBytes).to_string(),
            TYPE_LONG,
        ),
        static_broker(
            "log.retention.ms",
            defaults.value(TopicKey::RetentionMs).to_string(),
            TYPE_LONG,
        ),
        static_broker(
            "log.segment.bytes",
            defaults.value(TopicKey::SegmentBytes).to_string(),
            TYPE_INT,
        ),
        static_broker(
            "log.roll.ms",
            defaults.value(TopicKey::SegmentMs).to_string(),
            TYPE_LONG,
        ),
        static_broker(
            "log.message.timestamp.type",
            defaults.text(TopicKey::TimestampType),
            TYPE_STRING,
        ),
        static_broker(
            "message.max.bytes",
            defaults.value(TopicKey::MaxMessageBytes).to_string(),
            TYPE_INT,
        ),
        static_broker(
            "num.partitions",
            context.config.default_partitions.to_string(),
            TYPE_INT,
        ),
    ]
}

pub(crate) async fn describe_configs(
    context: &Context,
    who: &Principal,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let node = &context.node;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            let entries = match resource.resource_type {
                RESOURCE_TOPIC if !authorize::topic(context, who, Operation::DescribeConfigs, &name) => Err(topic_denied()),
                RESOURCE_BROKER if !authorize::cluster(context, who, Operation::DescribeConfigs) => Err(cluster_denied()),
                RESOURCE_TOPIC => topic_configs(node, &name, version).ok_or((ResponseError::UnknownTopicOrPartition, format!("unknown topic {}", quipu_meta::shown(&name)))),
                RESOURCE_BROKER => Ok(broker_configs(context, version)),
                other => Err((ResponseError::InvalidRequest, format!("Quipu describes topic (2) and broker (4) configs, not resource type {other}"))),
            };
            match entries {
                Ok(mut entries) => {
                    if let Some(keys) = &resource.configuration_keys {
                        entries.retain(|e| keys.contains(&e.name));
                    }
                    result.configs = entries;
                }
                Err((code, message)) => {
                    result.error_code = code.code();
                    result.error_message = Some(text(message));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// What to change in one resource's configs: `replace` (AlterConfigs) starts from none.
struct Alteration {
    resource_type: i8,
    name: String,
    set: Vec<(String, Option<String>)>,
    reset: Vec<String>,
    replace: bool,
    validate_only: bool,
}

/// Changes one topic's configs, for a client with ALTER_CONFIGS on it.
async fn alter_topic(
    context: &Context,
    who: &Principal,
    alteration: Alteration,
) -> Result<(), Refusal> {
    let Alteration {
        resource_type,
        name,
        set,
        reset,
        replace,
        validate_only,
    } = alteration;
    let allowed = match resource_type {
        RESOURCE_TOPIC => authorize::topic(context, who, Operation::AlterConfigs, &name),
        RESOURCE_BROKER => authorize::cluster(context, who, Operation::AlterConfigs),
        _ => true,
    };
    if !allowed {
        return Err(if resource_type == RESOURCE_TOPIC {
            topic_denied()
        } else {
            cluster_denied()
        });
    }
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidConfig,
            "only topic configs change at run time; a node's settings are in its quipu.toml"
                .to_string(),
        ));
    }
    let set = settings(set)?;
    // Resetting a fixed config leaves it at its one value.
    let reset: Vec<String> = reset
        .into_iter()
        .filter(|key| !FIXED.iter().any(|(fixed, _)| fixed == key))
        .collect();
    let request = ControllerRequest::AlterTopicConfig {
        name,
        set,
        reset,
        replace,
    };
    change(&context.node, request, validate_only).await
}

pub(crate) async fn alter_configs(
    context: &Context,
    who: &Principal,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let set = resource
            .configs
            .into_iter()
            .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
            .collect();
        let alteration = Alteration {
            resource_type: resource.resource_type,
            name,
            set,
            reset: Vec::new(),
            replace: true,
            validate_only: request.validate_only,
        };
        let outcome = alter_topic(context, who, alteration).await;
        let mut response = kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((code, message)) = outcome {
            response.error_code = code.code();
            response.error_message = Some(text(message));
        }
        responses.push(response);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(crate) async fn incremental_alter_configs(
    context: &Context,
    who: &Principal,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let mut set = Vec::new();
        let mut reset = Vec::new();
        let mut refused = None;
        for config in resource.configs {
            match config.config_operation {
                OP_SET => set.push((config.name.to_string(), config.value.map(|v| v.to_string()))),
                OP_DELETE => reset.push(config.name.to_string()),
                _ => {
                    refused = Some((
                        ResponseError::InvalidConfig,
                        format!(
                            "{}: APPEND and SUBTRACT apply to list configs; Quipu's topic configs are not lists",
                            quipu_meta::shown(&config.name)
                        ),
                    ))
                }
            }
        }
        let outcome = match refused {
            Some(refusal) => Err(refusal),
            None => {
                let alteration = Alteration {
                    resource_type: resource.resource_type,
                    name,
                    set,
                    reset,
                    replace: false,
                    validate_only: request.validate_only,
                };
                alter_topic(context, who, alteration).await
            }
        };
        let mut response = kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((code, message)) = outcome {
            response.error_code = code.code();
            response.error_message = Some(text(message));
        }
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub(crate) fn describe_cluster(
    context: &Context,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = &context.node;
    let brokers = node.with_metadata(|m| {
        m.nodes()
            .filter_map(|n| {
                let (host, port) = host_port(&n.kafka_addr)?;
                Some(
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(i32::try_from(n.id).unwrap_or(i32::MAX)))
                        .with_host(text(host))
                        .with_port(port),
                )
            })
            .collect()
    });
    let controller = node
        .controller_leader()
        .map_or(BrokerId(-1), |id| BrokerId(i32::try_from(id).unwrap_or(-1)));
    DescribeClusterResponse::default()
        .with_cluster_id(text(node.cluster_id().unwrap_or_default()))
        .with_controller_id(controller)
        .with_brokers(brokers)
}
