//! The process resources every replica holds, open files and memory maps (three of each per
//! segment, a few more for its state), and the room a new replica must leave of them: the node
//! raises its open-file limit at start ([`raise_open_file_limit`]) and refuses a new replica
//! ([`check_room_for_replica`]) while either is nearly used up, instead of failing in the middle
//! of a segment roll or an accept.

use std::path::Path;

/// A resource the node would run out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// File descriptors (`RLIMIT_NOFILE`): segment files, sockets.
    OpenFiles,
    /// Memory maps (`vm.max_map_count`): segment data and index files.
    MemoryMaps,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::OpenFiles => "open files (RLIMIT_NOFILE)",
            Resource::MemoryMaps => "memory maps (vm.max_map_count)",
        })
    }
}

/// The node is too close to a resource limit to take a new replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{used} of {limit} {resource} in use; a new replica must leave {headroom} free")]
pub struct Exhausted {
    /// The resource.
    pub resource: Resource,
    /// How many are in use.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// How many must stay free.
    pub headroom: u64,
}

/// Room a new replica must leave of a resource whose limit is `limit`: a tenth of it, at least
/// `floor` (connections, segment rolls and the replicas already open need the rest).
fn headroom(limit: u64, floor: u64) -> u64 {
    (limit / 10).max(floor)
}

/// Checks that `used` of `limit` leaves the headroom.
fn check(resource: Resource, used: u64, limit: u64, floor: u64) -> Result<(), Exhausted> {
    let headroom = headroom(limit, floor);
    if used.saturating_add(headroom) > limit {
        return Err(Exhausted {
            resource,
            used,
            limit,
            headroom,
        });
    }
    Ok(())
}

/// Whether this process has room for one more replica: open files under the soft
/// `RLIMIT_NOFILE` and memory maps under `vm.max_map_count`, each with a tenth of its limit
/// left. Reads `/proc` (it blocks briefly: call it on the blocking pool); where `/proc` is not
/// readable the check passes.
///
/// Counting open files and memory maps (`/proc/self/fd`, `/proc/self/maps`) costs time in
/// proportion to the replicas already open, so a node creating 2,000 replicas in a row would
/// spend most of its CPU on it (the kernel renders every map's path). A count is therefore
/// reused for up to [`COUNT_REUSED_FOR`], adding [`REPLICA_ESTIMATE`] of each resource for every
/// replica admitted since; a replica whose estimate would not fit takes a fresh count. The
/// limits are read at every check (an operator may lower them).
pub fn check_room_for_replica() -> Result<(), Exhausted> {
    static LAST: std::sync::Mutex<Option<Count>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    admit(&mut last, std::time::Instant::now(), limits(), used)
}

/// How long a count of `/proc` stands for the replicas admitted after it.
pub const COUNT_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Open files, and memory maps, a new replica is counted as taking until the next count: one
/// segment's data, index and time-index files and maps, its Raft state files, and slack.
pub const REPLICA_ESTIMATE: u64 = 8;

/// Open files and memory maps: limits, or how many are in use (`None` where unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    files: Option<u64>,
    maps: Option<u64>,
}

/// A count of what is in use, when it was taken, and the replicas admitted since.
#[derive(Debug, Clone, Copy)]
struct Count {
    taken: std::time::Instant,
    used: Pair,
    admitted: u64,
}

/// The soft `RLIMIT_NOFILE` and `vm.max_map_count` now (one system call, one short file).
fn limits() -> Pair {
    Pair {
        files: rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
        maps: std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok()),
    }
}

/// Open files and memory maps in use now.
fn used() -> Pair {
    Pair {
        files: count_entries(Path::new("/proc/self/fd")),
        maps: count_lines(Path::new("/proc/self/maps")),
    }
}

/// Checks one more replica against `limits`: with the `last` count (and the replicas admitted
/// since) while it is recent and the estimate fits; otherwise with a fresh count from `count`,
/// which becomes `last`.
fn admit(
    last: &mut Option<Count>,
    now: std::time::Instant,
    limits: Pair,
    count: impl FnOnce() -> Pair,
) -> Result<(), Exhausted> {
    if let Some(last) = last.as_mut()
        && now.saturating_duration_since(last.taken) < COUNT_REUSED_FOR
        && check_both(limits, last.used, (last.admitted + 1) * REPLICA_ESTIMATE).is_ok()
    {
        last.admitted += 1;
        return Ok(());
    }
    let used = count();
    check_both(limits, used, 0)?;
    *last = Some(Count {
        taken: now,
        used,
        admitted: 1,
    });
    Ok(())
}

/// Checks open files and memory maps, each counted `extra` above `used`.
fn check_both(limits: Pair, used: Pair, extra: u64) -> Result<(), Exhausted> {
    if let (Some(limit), Some(used)) = (limits.files, used.files) {
        check(Resource::OpenFiles, used + extra, limit, 256)?;
    }
    if let (Some(limit), Some(used)) = (limits.maps, used.maps) {
        check(Resource::MemoryMaps, used + extra, limit, 1024)?;
    }
    Ok(())
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

fn count_lines(path: &Path) -> Option<u64> {
    let text = std::fs::read(path).ok()?;
    Some(text.iter().filter(|b| **b == b'\n').count() as u64)
}

/// Raises this process's soft open-file limit to its hard limit (every replica holds three
/// files per segment); returns the limit before and after.
pub fn raise_open_file_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
    }
    Ok((before.current, getrlimit(Resource::Nofile).current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_replica_must_leave_a_tenth_of_each_limit() {
        assert_eq!(check(Resource::OpenFiles, 17_000, 20_000, 256), Ok(()));
        assert_eq!(
            check(Resource::OpenFiles, 18_001, 20_000, 256),
            Err(Exhausted {
                resource: Resource::OpenFiles,
                used: 18_001,
                limit: 20_000,
                headroom: 2_000
            })
        );
        // A small limit keeps the floor free.
        assert!(check(Resource::OpenFiles, 800, 1024, 256).is_err());
        assert!(check(Resource::MemoryMaps, 0, 1000, 1024).is_err());
        // The process this test runs in has room.
        check_room_for_replica().unwrap();
    }

    #[test]
    fn a_count_stands_for_a_second_and_only_while_the_estimate_fits() {
        let start = std::time::Instant::now();
        let limits = Pair {
            files: Some(20_000),
            maps: Some(65_530),
        };
        let mut last = None;
        let counted = std::cell::Cell::new(0);
        let counts = &counted;
        let in_use = |n: u64| {
            move || {
                counts.set(counts.get() + 1);
                Pair {
                    files: Some(n),
                    maps: Some(n),
                }
            }
        };
        // 17,000 of 20,000 files leave 1,000 above the headroom of 2,000: 125 replicas of 8.
        for _ in 0..125 {
            admit(&mut last, start, limits, in_use(17_000)).unwrap();
        }
        assert_eq!(
            counted.get(),
            1,
            "one count for 125 replicas within a second"
        );
        // The 126th would not fit the estimate: a fresh count decides, and it has no room.
        let refused = admit(&mut last, start, limits, in_use(18_001)).unwrap_err();
        assert_eq!(refused.resource, Resource::OpenFiles);
        assert_eq!(counted.get(), 2);
        // A count older than a second is taken again even when the estimate fits.
        admit(&mut last, start, limits, in_use(100)).unwrap();
        admit(&mut last, start + COUNT_REUSED_FOR, limits, in_use(100)).unwrap();
        assert_eq!(counted.get(), 4);
        // A lowered limit is seen at once: the recent count no longer fits, a fresh one refuses.
        let lowered = Pair {
            files: Some(300),
            ..limits
        };
        let refused = admit(&mut last, start + COUNT_REUSED_FOR, lowered, in_use(100));
        assert_eq!(refused.unwrap_err().limit, 300);
        assert_eq!(counted.get(), 5);
        // Memory maps are checked as files are.
        let mut last = None;
        let maps_full = || Pair {
            files: Some(0),
            maps: Some(60_000),
        };
        assert_eq!(
            admit(&mut last, start, limits, maps_full)
                .unwrap_err()
                .resource,
            Resource::MemoryMaps
        );
    }
}
