//! Node-wide bounds on what clients can make a node hold:
//! - [`ConnectionLimits`]: how many client connections a listener holds at once, in all and per
//!   client address. Shared by the client API and the Kafka listener.
//! - [`ProduceBudget`]: how many bytes of produced batches the node holds in memory at once, on
//!   every acks level.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Pause after a failed accept before the next.
const ACCEPT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Bounds on the connections of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    slots: Arc<tokio::sync::Semaphore>,
    total_max: usize,
    per_address_max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees its places.
#[derive(Debug)]
pub struct ConnectionPermit {
    _slot: tokio::sync::OwnedSemaphorePermit,
    address: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The listener it came through, once `accept` counted it accepted (its close is counted
    /// too).
    listener: Option<&'static str>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The listener holds its most connections.
    #[error("too many connections ({0} at most)")]
    Total(usize),
    /// This address holds its most connections.
    #[error("too many connections from this address ({0} at most)")]
    PerAddress(usize),
}

impl ConnectionLimits {
    /// At most `total_max` connections, and `per_address_max` from one address.
    pub fn new(total_max: usize, per_address_max: usize) -> ConnectionLimits {
        ConnectionLimits {
            slots: Arc::new(tokio::sync::Semaphore::new(total_max)),
            total_max,
            per_address_max,
            open: Arc::default(),
        }
    }

    /// The next connection on `listener` within the limits, with TCP_NODELAY set (small replies
    /// must not wait for a delayed ACK). A connection beyond a limit is closed at once; a failed
    /// accept (out of descriptors, say) is retried after a pause rather than in a busy loop.
    /// Cancel-safe: nothing is awaited between accepting a connection and returning it.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
        what: &'static str,
    ) -> (
        tokio::net::TcpStream,
        std::net::SocketAddr,
        ConnectionPermit,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(
                        listener = what,
                        error = &e as &dyn std::error::Error,
                        "cannot accept a connection"
                    );
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            };
            match self.admit(peer.ip()) {
                Ok(mut permit) => {
                    let _ = stream.set_nodelay(true);
                    permit.listener = Some(what);
                    metrics::counter!("quipu_connections_accepted_total", "listener" => what)
                        .increment(1);
                    return (stream, peer, permit);
                }
                Err(refused) => {
                    let limit = match refused {
                        Refused::Total(_) => "total",
                        Refused::PerAddress(_) => "per_address",
                    };
                    metrics::counter!(
                        "quipu_connections_refused_total",
                        "listener" => what,
                        "limit" => limit
                    )
                    .increment(1);
                    tracing::warn!(listener = what, %peer, %refused, "connection refused");
                }
            }
        }
    }

    /// Admits a connection from `address`, or says which limit it hit.
    pub fn admit(&self, address: IpAddr) -> Result<ConnectionPermit, Refused> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Refused::Total(self.total_max))?;
        let mut open = self
            .open
            .lock()
            .expect("connection counts poisoned by a panic");
        let count = open.entry(address).or_insert(0);
        if *count >= self.per_address_max {
            return Err(Refused::PerAddress(self.per_address_max));
        }
        *count += 1;
        Ok(ConnectionPermit {
            _slot: slot,
            address,
            open: Arc::clone(&self.open),
            listener: None,
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(listener) = self.listener {
            // Counters, not a gauge: every gauge is set at scrape time (quipu-admin).
            metrics::counter!("quipu_connections_closed_total", "listener" => listener)
                .increment(1);
        }
        let mut open = self
            .open
            .lock()
            .expect("connection counts poisoned by a panic");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// What a produced batch must get past on this node before it is proposed, shared by every
/// replica: the data disk's free-space reserve, then room in the produce budget.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) disk: crate::disk::DiskGuard,
    pub(crate) budget: ProduceBudget,
    /// Bounds on each partition's idempotent producer table.
    pub(crate) producers: quipu_raft::producers::ProducerLimits,
}

/// How long a produce waits for room in the [`ProduceBudget`] before it is refused as busy.
pub const PRODUCE_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The bytes of produced batches a node holds in memory at once: a batch takes its length from
/// the budget before it is proposed and gives it back once the leader's log holds it (or the
/// proposal failed). This bounds what waits in Raft's request queue on every acks level,
/// acks=0 included, whose caller never waits for the log.
#[derive(Debug)]
pub struct ProduceBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// Room for one batch in the [`ProduceBudget`]; dropping it gives the room back.
#[derive(Debug)]
pub struct ProduceRoom {
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

impl ProduceBudget {
    /// A budget of `max` bytes (at most `tokio::sync::Semaphore::MAX_PERMITS`).
    pub fn new(max: u64) -> ProduceBudget {
        let max = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        ProduceBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// The budget, in bytes.
    pub fn max(&self) -> u64 {
        self.max as u64
    }

    /// Bytes taken now.
    pub fn in_flight(&self) -> u64 {
        (self.max - self.bytes.available_permits()) as u64
    }

    /// Room for a batch of `len` bytes (a batch larger than the whole budget takes all of it),
    /// waiting at most `wait` for earlier batches to give theirs back; `None` if none came.
    /// Waiters are served in order, so a large batch is not starved by small ones.
    pub async fn room(&self, len: usize, wait: std::time::Duration) -> Option<ProduceRoom> {
        let take = u32::try_from(len.clamp(1, self.max)).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.bytes).acquire_many_owned(take);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Some(ProduceRoom { _bytes: permit }),
            // The semaphore is never closed; a timeout means no room came.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_in_all_and_per_address_and_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerAddress(2));
        let _third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total(3));
        drop(first);
        limits.admit(a).unwrap();
    }

    #[tokio::test]
    async fn produce_room_is_bounded_waits_in_order_and_comes_back() {
        let budget = ProduceBudget::new(100);
        let wait = std::time::Duration::from_millis(20);
        let first = budget.room(60, wait).await.unwrap();
        assert_eq!(budget.in_flight(), 60);
        assert!(
            budget.room(50, wait).await.is_none(),
            "no room for 50 of 100 with 60 taken"
        );
        let _second = budget.room(40, wait).await.unwrap();
        drop(first);
        // A batch larger than the whole budget takes all of it, once the rest is back.
        assert!(budget.room(1000, wait).await.is_none());
        assert_eq!(budget.in_flight(), 40);
        let _small = budget.room(60, wait).await.unwrap();
        assert_eq!(budget.in_flight(), 100);
    }
}
