//! Consumer groups as every node reports them for metrics: each node knows the high watermarks
//! of the partitions it leads and the groups it coordinates; a scrape asks every other node for
//! theirs (`Report`, `docs/protocol/raft-transport.md`) and computes each group's lag from the
//! same answers, so the lag reads the same whichever node is scraped.

use std::collections::HashMap;
use std::time::Duration;

use quipu_proto::v1::{
    LedHighWatermark, ReportReply, ReportRequest, ReportedGroup, ReportedOffset,
};

use crate::node::NodeHandle;
use quipu_raft::NodeId;

/// Most committed offsets one node reports; past it the rest are left out and `truncated` set.
pub const REPORTED_OFFSETS_MAX: usize = 100_000;

/// How long a scrape waits for another node's report.
pub const REPORT_WAIT: Duration = Duration::from_secs(2);

/// The consumer groups of the whole cluster with their lag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsReport {
    /// Every group some node answered for, by name.
    pub groups: Vec<GroupReport>,
    /// Nodes that did not answer in time (their groups are missing).
    pub unanswered: Vec<NodeId>,
    /// Whether some node left committed offsets out ([`REPORTED_OFFSETS_MAX`]).
    pub truncated: bool,
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    /// The group id.
    pub group: String,
    /// "classic" or "consumer".
    pub protocol: String,
    /// Kafka's state name.
    pub state: String,
    /// Members now.
    pub members: u32,
    /// Generation or group epoch: rises with every rebalance.
    pub generation: i32,
    /// Its committed offsets, by topic and partition.
    pub offsets: Vec<GroupOffset>,
}

/// A group's committed offset of one partition, and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the group reads.
    pub committed: i64,
    /// Records between it and the partition's high watermark; `None` when no node that answered
    /// leads the partition (or it no longer exists).
    pub lag: Option<u64>,
}

impl NodeHandle {
    /// What this node tells others: its led partitions' high watermarks and its groups.
    pub(crate) fn local_report(&self) -> ReportReply {
        let replicas: Vec<std::sync::Arc<crate::Partition>> = self
            .inner
            .partitions
            .read()
            .expect("partitions lock poisoned by a panic")
            .values()
            .cloned()
            .collect();
        let led = replicas
            .iter()
            .filter(|p| p.is_leader())
            .map(|p| LedHighWatermark {
                group_id: p.group().0,
                high_watermark: p.high_watermark().0,
            })
            .collect();
        let mut budget = REPORTED_OFFSETS_MAX;
        let mut truncated = false;
        let groups = self
            .list_groups_with_offsets()
            .into_iter()
            .map(|(listed, offsets)| {
                let take = offsets.len().min(budget);
                truncated |= take < offsets.len();
                budget -= take;
                ReportedGroup {
                    group: listed.group,
                    protocol: listed.protocol.to_string(),
                    state: listed.state.to_string(),
                    members: u32::try_from(listed.members).unwrap_or(u32::MAX),
                    generation: listed.generation,
                    offsets: offsets
                        .into_iter()
                        .take(take)
                        .map(|(topic, partition, offset)| ReportedOffset {
                            topic,
                            partition,
                            offset,
                        })
                        .collect(),
                }
            })
            .collect();
        ReportReply {
            led,
            groups,
            truncated,
        }
    }

    /// Every consumer group of the cluster with its lag: this node's report and every other
    /// registered node's (asked at once, each awaited at most [`REPORT_WAIT`]; a node whose
    /// heartbeats stopped is not asked).
    pub async fn groups_report(&self) -> GroupsReport {
        let inner = &self.inner;
        let me = inner.config.node_id;
        let peers: Vec<(NodeId, String)> = inner.metadata.with_metadata(|m| {
            m.nodes()
                .filter(|n| n.id != me && !m.is_removed(n.id))
                .map(|n| (n.id, n.raft_addr.clone()))
                .collect()
        });
        let mut calls = tokio::task::JoinSet::new();
        let mut unanswered = Vec::new();
        // A node known to be down (heard before, silent since) is not waited for.
        let liveness = crate::quiesce::Timings::of(&inner.raft_config).liveness;
        for (id, addr) in peers {
            if inner.liveness.is_silent(id, liveness) {
                unanswered.push(id);
                continue;
            }
            let Ok(mut client) = inner.peers.client(&addr) else {
                unanswered.push(id);
                continue;
            };
            calls.spawn(async move {
                let request = ReportRequest {
                    from_node: me,
                    to_node: id,
                };
                match tokio::time::timeout(REPORT_WAIT, client.report(request)).await {
                    Ok(Ok(reply)) => (id, Some(reply.into_inner())),
                    _ => (id, None),
                }
            });
        }
        let mut replies = vec![self.local_report()];
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((_, Some(reply))) => replies.push(reply),
                Ok((id, None)) => unanswered.push(id),
                Err(_) => {}
            }
        }
        unanswered.sort_unstable();
        let mut report = self.merge(replies);
        report.unanswered = unanswered;
        report
    }

    /// One report from the nodes' answers: lag from the leaders' high watermarks.
    fn merge(&self, replies: Vec<ReportReply>) -> GroupsReport {
        let high_watermarks: HashMap<u64, u64> = replies
            .iter()
            .flat_map(|r| r.led.iter().map(|l| (l.group_id, l.high_watermark)))
            .collect();
        let truncated = replies.iter().any(|r| r.truncated);
        let mut groups: Vec<GroupReport> = self.inner.metadata.with_metadata(|m| {
            replies
                .into_iter()
                .flat_map(|r| r.groups)
                .map(|g| GroupReport {
                    offsets: g
                        .offsets
                        .into_iter()
                        .map(|o| {
                            let group = m
                                .topic(&o.topic)
                                .and_then(|t| t.partitions.get(usize::try_from(o.partition).ok()?))
                                .map(|p| p.group);
                            let lag = group
                                .and_then(|g| high_watermarks.get(&g))
                                .map(|&hw| hw.saturating_sub(u64::try_from(o.offset).unwrap_or(0)));
                            GroupOffset {
                                topic: o.topic,
                                partition: o.partition,
                                committed: o.offset,
                                lag,
                            }
                        })
                        .collect(),
                    group: g.group,
                    protocol: g.protocol,
                    state: g.state,
                    members: g.members,
                    generation: g.generation,
                })
                .collect()
        });
        // Two nodes may both believe they coordinate a group for a moment (a leadership
        // change): one entry per group, the one with the higher generation.
        groups.sort_by(|a, b| a.group.cmp(&b.group).then(b.generation.cmp(&a.generation)));
        groups.dedup_by(|later, kept| later.group == kept.group);
        GroupsReport {
            groups,
            unanswered: Vec::new(),
            truncated,
        }
    }
}
