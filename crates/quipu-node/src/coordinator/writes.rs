//! [`Writes`]: the writes of each group's records under way on the coordinator (its metadata,
//! its offset commits), counted per group so that what must come after them waits: a deletion
//! (so that no write lands after its tombstones) and an offset fetch (so that it sees every
//! commit accepted before it: Kafka's stable offsets).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes of each group's records under way.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    count: Mutex<HashMap<String, usize>>,
    done: tokio::sync::Notify,
}

/// One write of a group's records under way (counted until dropped).
pub(crate) struct Writing {
    writes: Arc<Writes>,
    group: String,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut count = self.writes.lock();
        if let Some(n) = count.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                count.remove(&self.group);
            }
        }
        drop(count);
        self.writes.done.notify_waiters();
    }
}

impl Writes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.count.lock().expect("writes lock poisoned by a panic")
    }

    /// Counts a write of `group`'s records until the guard is dropped.
    pub(crate) fn writing(self: &Arc<Self>, group: &str) -> Writing {
        *self.lock().entry(group.to_string()).or_default() += 1;
        Writing {
            writes: Arc::clone(self),
            group: group.to_string(),
        }
    }

    /// Waits (at most `patience`) until no write of `group`'s records is under way; returns
    /// whether none is.
    pub(crate) async fn done(&self, group: &str, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.lock().contains_key(group) {
                return true;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return false;
            }
        }
    }
}
