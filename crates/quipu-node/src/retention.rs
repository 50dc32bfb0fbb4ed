//! Retention: every replica applies its log's retention settings by itself, every
//! `retention_check_interval`.

use std::sync::Arc;

use crate::Partition;
use crate::node::Inner;

pub(crate) async fn enforce_retention(inner: &Inner) -> usize {
    let partitions: Vec<Arc<Partition>> = inner
        .partitions
        .read()
        .expect("partitions lock poisoned by a panic")
        .values()
        .cloned()
        .collect();
    let mut purged = 0;
    for partition in partitions {
        match partition.enforce_retention().await {
            Ok(Some(_)) => purged += 1,
            Ok(None) => {}
            Err(e) => tracing::warn!(group = %partition.group(), error = %e, "retention failed"),
        }
    }
    purged
}

/// Applies retention to every replica every `retention_check_interval`.
pub(crate) async fn run_retention(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.config.retention_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        enforce_retention(&inner).await;
    }
}
