//! [`Throttle`]: a node's bound on the bandwidth of catch-up traffic to the new replicas of
//! moving partitions (`cluster.move_bytes_per_sec`), so that a move does not take the bandwidth
//! producers and consumers need. Only Raft messages from a partition's leader to a replica that
//! the move adds (a learner of the group) wait; everything else goes at once.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use quipu_raft::NodeId;

use crate::GroupId;

/// A token bucket shared by every throttled (group, replica) of the node, refilled at the
/// configured rate up to one second's worth.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// Bytes per second; `None`: unbounded.
    rate: Mutex<Option<u64>>,
    /// The replicas being caught up by a move this node leads.
    throttled: Mutex<HashSet<(GroupId, NodeId)>>,
    /// Bytes available now (negative: owed) and when that was computed. Held while a sender
    /// waits, so throttled senders go in turn.
    bucket: tokio::sync::Mutex<Option<(tokio::time::Instant, f64)>>,
}

impl Throttle {
    /// Sets the rate (`None`: unbounded).
    pub(crate) fn set_rate(&self, bytes_per_sec: Option<u64>) {
        *self.rate.lock().expect("throttle lock poisoned by a panic") = bytes_per_sec;
    }

    /// The replicas whose catch-up traffic is bounded from now on (replacing the previous set).
    pub(crate) fn set_throttled(&self, replicas: HashSet<(GroupId, NodeId)>) {
        *self
            .throttled
            .lock()
            .expect("throttle lock poisoned by a panic") = replicas;
    }

    /// The bytes per second bounding `target` in `group` now, if its traffic is throttled.
    pub(crate) fn rate_for(&self, group: GroupId, target: NodeId) -> Option<u64> {
        let rate = (*self.rate.lock().expect("throttle lock poisoned by a panic"))?;
        self.throttled
            .lock()
            .expect("throttle lock poisoned by a panic")
            .contains(&(group, target))
            .then_some(rate.max(1))
    }

    /// Whether an append of `bytes` in `entries` entries to `target` in `group` may go now. It
    /// waits at most `window` for its share (openraft drops an append that takes longer than a
    /// heartbeat interval, so a throttled one can never wait long): an append that would need
    /// longer is asked to shrink (openraft retries at once with fewer entries), a single entry
    /// too large for the window goes on credit when nothing is owed, and while something is
    /// owed the replica is reported unreachable (openraft backs off, [`Throttle::owed`] long).
    pub(crate) async fn admit(
        &self,
        group: GroupId,
        target: NodeId,
        bytes: usize,
        entries: usize,
        window: Duration,
    ) -> Admission {
        let Some(rate) = self.rate_for(group, target) else {
            return Admission::Go;
        };
        let rate = rate as f64;
        let bytes = bytes as f64;
        let mut bucket = self.bucket.lock().await;
        let now = tokio::time::Instant::now();
        let (at, available) = bucket.unwrap_or((now, rate));
        let available = (available + now.duration_since(at).as_secs_f64() * rate).min(rate);
        if available >= bytes {
            *bucket = Some((now, available - bytes));
            return Admission::Go;
        }
        let wait = (bytes - available) / rate;
        if wait <= window.as_secs_f64() {
            *bucket = Some((now, available - bytes));
            // Held while waiting: throttled appends go in turn.
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            return Admission::Go;
        }
        *bucket = Some((now, available));
        if entries > 1 {
            // As many entries as one window's share holds, at least one.
            let share = available.max(0.0) + rate * window.as_secs_f64();
            // Fewer than `entries`, so the float is a small whole number.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let fit = (entries as f64 * share / bytes).floor() as u64;
            return Admission::Shrink(fit.max(1));
        }
        if available > 0.0 {
            *bucket = Some((now, available - bytes));
            return Admission::Go;
        }
        Admission::Later
    }

    /// How long the bytes owed take to be paid (at least [`OWED_WAIT_MIN`]).
    pub(crate) fn owed(&self) -> Duration {
        let rate = self
            .rate
            .lock()
            .expect("throttle lock poisoned by a panic")
            .unwrap_or(u64::MAX)
            .max(1) as f64;
        let owed = self
            .bucket
            .try_lock()
            .ok()
            .and_then(|b| *b)
            .map_or(0.0, |(at, available)| {
                -(available + at.elapsed().as_secs_f64() * rate)
            });
        Duration::from_secs_f64((owed / rate).max(0.0)).max(OWED_WAIT_MIN)
    }
}

/// Shortest back-off of a throttled replica.
pub(crate) const OWED_WAIT_MIN: Duration = Duration::from_millis(10);

/// What [`Throttle::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it.
    Go,
    /// Send at most this many entries instead.
    Shrink(u64),
    /// Send nothing now.
    Later,
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(50);

    #[tokio::test(start_paused = true)]
    async fn throttled_replicas_get_their_share_and_others_go_at_once() {
        let throttle = Throttle::default();
        throttle.set_rate(Some(10_000));
        throttle.set_throttled(HashSet::from([(GroupId(1), 2)]));
        let start = tokio::time::Instant::now();
        // Not throttled: at once, whatever the size.
        assert_eq!(
            throttle.admit(GroupId(1), 3, 1 << 20, 9, WINDOW).await,
            Admission::Go
        );
        assert_eq!(
            throttle.admit(GroupId(2), 2, 1 << 20, 9, WINDOW).await,
            Admission::Go
        );
        // One second's worth is there at first.
        assert_eq!(
            throttle.admit(GroupId(1), 2, 10_000, 10, WINDOW).await,
            Admission::Go
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // 400 bytes more take 40 ms: within the window, waited for.
        assert_eq!(
            throttle.admit(GroupId(1), 2, 400, 1, WINDOW).await,
            Admission::Go
        );
        assert_eq!(start.elapsed(), Duration::from_millis(40));
        // 10 entries of 1,000 bytes would take a second: shrunk to what a window holds.
        assert_eq!(
            throttle.admit(GroupId(1), 2, 10_000, 10, WINDOW).await,
            Admission::Shrink(1)
        );
        // A single entry larger than the window goes on credit once enough is there...
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            throttle.admit(GroupId(1), 2, 5_000, 1, WINDOW).await,
            Admission::Go
        );
        // ...and then nothing goes until it is paid: about half a second.
        assert_eq!(
            throttle.admit(GroupId(1), 2, 5_000, 1, WINDOW).await,
            Admission::Later
        );
        let owed = throttle.owed();
        assert!(
            owed > Duration::from_millis(450) && owed <= Duration::from_millis(500),
            "{owed:?}"
        );
        // Paid off: the bytes sent over the whole run stay within the rate plus one second.
        tokio::time::sleep(owed).await;
        assert_eq!(
            throttle.admit(GroupId(1), 2, 400, 1, WINDOW).await,
            Admission::Go
        );
        let sent = 10_000.0 + 400.0 + 5_000.0 + 400.0;
        let allowed = 10_000.0 * (1.0 + start.elapsed().as_secs_f64());
        assert!(sent <= allowed, "{sent} bytes in {:?}", start.elapsed());
        // Unbounded again: at once.
        throttle.set_rate(None);
        assert_eq!(
            throttle.admit(GroupId(1), 2, 1 << 30, 1, WINDOW).await,
            Admission::Go
        );
    }
}
