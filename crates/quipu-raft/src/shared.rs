//! State a partition's [`LogStore`](crate::LogStore) and
//! [`PartitionStateMachine`](crate::PartitionStateMachine) share.

use std::sync::Mutex;

/// Written by the state machine, read by the log store and the fetch path.
#[derive(Debug, Default)]
pub struct PartitionShared {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Inner {
    high_watermark: u64,
    /// `(last index, next offset)` of the last snapshot installed from a leader: where the log
    /// restarts when it is purged past its end.
    installed: Option<(u64, u64)>,
}

impl PartitionShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("partition shared state poisoned by a panic")
    }

    /// The first offset not yet committed.
    pub fn high_watermark(&self) -> u64 {
        self.lock().high_watermark
    }

    pub(crate) fn set_high_watermark(&self, offset: u64) {
        self.lock().high_watermark = offset;
    }

    pub(crate) fn set_installed(&self, last_index: u64, next_offset: u64) {
        self.lock().installed = Some((last_index, next_offset));
    }

    /// The next offset after an installed snapshot whose last index is `last_index`.
    pub(crate) fn installed_next_offset(&self, last_index: u64) -> Option<u64> {
        match self.lock().installed {
            Some((index, offset)) if index == last_index => Some(offset),
            _ => None,
        }
    }
}
