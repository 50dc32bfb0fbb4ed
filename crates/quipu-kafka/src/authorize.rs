//! The checks each Kafka API makes before it acts (with authorization on; each is `true` when
//! it is off): which operation on which resource, as Kafka's `KafkaApis` asks. The table of
//! APIs and their checks is in `docs/protocol/security.md`.

use quipu_meta::acls::{Operation, ResourceType};
use quipu_node::Principal;

use crate::server::Context;

/// Whether `who` may do `operation` on topic `name`.
pub(crate) fn topic(context: &Context, who: &Principal, operation: Operation, name: &str) -> bool {
    context
        .node
        .authorize(who, operation, ResourceType::Topic, name)
}

/// Whether `who` may do `operation` on consumer group `name`.
pub(crate) fn group(context: &Context, who: &Principal, operation: Operation, name: &str) -> bool {
    context
        .node
        .authorize(who, operation, ResourceType::Group, name)
}

/// Whether `who` may do `operation` on the cluster.
pub(crate) fn cluster(context: &Context, who: &Principal, operation: Operation) -> bool {
    context.node.authorize_cluster(who, operation)
}

/// Whether `who` may create topic `name`: CREATE on the cluster, or on the topic.
pub(crate) fn create_topic(context: &Context, who: &Principal, name: &str) -> bool {
    cluster(context, who, Operation::Create) || topic(context, who, Operation::Create, name)
}
