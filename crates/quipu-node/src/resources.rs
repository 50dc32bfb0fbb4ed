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
pub fn check_room_for_replica() -> Result<(), Exhausted> {
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let (Some(limit), Some(used)) = (files, count_entries(Path::new("/proc/self/fd"))) {
        check(Resource::OpenFiles, used, limit, 256)?;
    }
    let maps_limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if let (Some(limit), Some(used)) = (maps_limit, count_lines(Path::new("/proc/self/maps"))) {
        check(Resource::MemoryMaps, used, limit, 1024)?;
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
}
