//! The controller's effects for this node, carried out in controller-log order: replicas
//! started (several at once) and deleted, topic settings applied, a drained or removed node
//! stepping aside.

use std::sync::Arc;

use quipu_meta::Effect;

use crate::GroupId;
use crate::node::Inner;

/// Carries out, in order, the controller's effects for this node: first `restore` (what the
/// controller's snapshot and the entries applied again at the start had it do), then what
/// arrives on `effects`, each counted in `progress` once done (a controller snapshot waits for
/// them).
pub(crate) async fn carry_out_effects(
    inner: Arc<Inner>,
    restore: Vec<Effect>,
    mut effects: tokio::sync::mpsc::Receiver<Effect>,
    progress: Arc<quipu_raft::EffectsProgress>,
) {
    // Closed however this task ends (the node stopping drops it).
    struct Closing(Arc<quipu_raft::EffectsProgress>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _closing = Closing(Arc::clone(&progress));
    if !restore.is_empty() {
        tracing::info!(
            node_id = inner.config.node_id,
            effects = restore.len(),
            "carrying out the controller snapshot's effects"
        );
    }
    // The held effects come before any on the channel; both are counted alike.
    let mut restore = restore.into_iter();
    let mut next = match restore.next() {
        Some(effect) => Some(effect),
        None => effects.recv().await,
    };
    while let Some(effect) = next.take() {
        let mut carried = 1u64;
        let changing = inner.replica_changes.lock().await;
        match effect {
            Effect::StartReplica {
                group,
                replicas,
                created,
                ..
            } => {
                // Replicas to start that are already queued, of distinct groups, start together
                // (a node's restart opens all of its replicas this way): opening one is mostly
                // waiting on its disk. The first other effect ends the batch and runs after it,
                // so the effects of one group keep their order.
                let mut batch = vec![(GroupId(group), replicas, created)];
                while batch.len() < STARTS_AT_ONCE {
                    let queued = restore.next().or_else(|| effects.try_recv().ok());
                    match queued {
                        Some(Effect::StartReplica {
                            group,
                            replicas,
                            created,
                            ..
                        }) if batch.iter().all(|(g, _, _)| g.0 != group) => {
                            batch.push((GroupId(group), replicas, created));
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                carried = batch.len() as u64;
                futures_util::future::join_all(batch.iter().map(|(group, replicas, created)| {
                    inner.start_replica(*group, replicas, *created)
                }))
                .await;
            }
            Effect::DeleteReplica { group } => inner.delete_replica(GroupId(group)).await,
            Effect::ConfigChanged { topic } => inner.apply_topic_config(&topic),
            // Not awaited: handing leaderships over must not hold the effects that follow.
            Effect::Drain => drop(tokio::spawn(Arc::clone(&inner).step_aside())),
            Effect::ClusterId(id) => {
                // Kept with an fsync: off the runtime's threads.
                let identity = inner.identity.clone();
                match tokio::task::spawn_blocking(move || identity.learn(&id)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        node_id = inner.config.node_id,
                        error = &e as &dyn std::error::Error,
                        "cannot keep the cluster id: this node's transport goes on without it"
                    ),
                    Err(e) => tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "the task keeping the cluster id failed"
                    ),
                }
            }
            Effect::Removed => {
                tracing::error!(
                    node_id = inner.config.node_id,
                    "this node was removed from the cluster: stop it; its id is never used again"
                );
                drop(tokio::spawn(Arc::clone(&inner).step_aside()));
            }
        }
        // Not held while waiting: a replica's reopening takes it too.
        drop(changing);
        progress.carried_out(carried);
        if next.is_none() {
            next = match restore.next() {
                Some(effect) => Some(effect),
                None => effects.recv().await,
            };
        }
    }
}

/// Most replicas the controller's effects start at once.
const STARTS_AT_ONCE: usize = 16;
