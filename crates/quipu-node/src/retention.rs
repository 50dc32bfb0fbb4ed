//! Background work on every replica: retention (each replica applies its log's retention
//! settings by itself, every `retention_check_interval`) and the timed sync of `fsync =
//! interval_ms`.

use std::sync::Arc;

use crate::node::Inner;

pub(crate) async fn enforce_retention(inner: &Inner) -> usize {
    let partitions = inner.hosted_partitions();
    let mut purged = 0;
    for partition in partitions {
        match partition.enforce_retention().await {
            Ok(Some(_)) => purged += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(group = %partition.group(), error = &e as &dyn std::error::Error, "retention failed")
            }
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

/// Under `fsync = interval_ms`, syncs every replica's log that holds unsynced entries once per
/// interval, so that an idle log is durable within the interval too (appends sync only when they
/// find the interval passed). Does nothing under `always` (every append syncs) or `never`.
pub(crate) async fn run_interval_sync(inner: Arc<Inner>) {
    let quipu_storage::FsyncPolicy::IntervalMs(interval_ms) = inner.config.log.fsync else {
        return;
    };
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let partitions = inner.hosted_partitions();
        let synced = tokio::task::spawn_blocking(move || {
            for partition in partitions {
                if let Err(e) = partition.sync_log() {
                    tracing::error!(group = %partition.group(), error = &e as &dyn std::error::Error, "interval sync failed");
                }
            }
        })
        .await;
        if let Err(e) = synced {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "interval sync task failed"
            );
        }
    }
}
