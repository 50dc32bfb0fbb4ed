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
/// Reading `/proc/self/maps` and `/proc/self/fd` costs time in proportion to the replicas
/// already open, so a node creating 2,000 replicas in a row would spend most of its CPU on it
/// (the kernel renders every map's path). A reading is therefore reused for up to
/// [`READING_REUSED_FOR`], counting [`REPLICA_ESTIMATE`] of each resource for every replica
/// admitted since; a replica whose estimate would not fit takes a fresh reading.
pub fn check_room_for_replica() -> Result<(), Exhausted> {
    static LAST: std::sync::Mutex<Option<Reading>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    admit(&mut last, std::time::Instant::now(), usage)
}

/// How long a reading of `/proc` stands for the replicas admitted after it.
pub const READING_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Open files, and memory maps, a new replica is counted as taking until the next reading: one
/// segment's data, index and time-index files and maps, its Raft state files, and slack.
pub const REPLICA_ESTIMATE: u64 = 8;

/// This process's use of a resource and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Use {
    used: u64,
    limit: u64,
}

/// What `/proc` said, when, and the replicas admitted since.
#[derive(Debug, Clone, Copy)]
struct Reading {
    taken: std::time::Instant,
    files: Option<Use>,
    maps: Option<Use>,
    admitted: u64,
}

/// Open files and memory maps now (`None` where `/proc` or the limit cannot be read).
fn usage() -> (Option<Use>, Option<Use>) {
    let files_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let files = files_limit
        .zip(count_entries(Path::new("/proc/self/fd")))
        .map(|(limit, used)| Use { used, limit });
    let maps_limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let maps = maps_limit
        .zip(count_lines(Path::new("/proc/self/maps")))
        .map(|(limit, used)| Use { used, limit });
    (files, maps)
}

/// Checks one more replica against `last` (and the `admitted` since) while it is recent and
/// the estimate fits; otherwise against a fresh reading from `read`, which becomes `last`.
fn admit(
    last: &mut Option<Reading>,
    now: std::time::Instant,
    read: impl FnOnce() -> (Option<Use>, Option<Use>),
) -> Result<(), Exhausted> {
    let fits = |reading: &Reading| {
        let extra = (reading.admitted + 1) * REPLICA_ESTIMATE;
        check_both(reading.files, reading.maps, extra).is_ok()
    };
    if let Some(reading) = last.as_mut()
        && now.saturating_duration_since(reading.taken) < READING_REUSED_FOR
        && fits(reading)
    {
        reading.admitted += 1;
        return Ok(());
    }
    let (files, maps) = read();
    check_both(files, maps, 0)?;
    *last = Some(Reading {
        taken: now,
        files,
        maps,
        admitted: 1,
    });
    Ok(())
}

/// Checks open files and memory maps, each counted `extra` above its reading.
fn check_both(files: Option<Use>, maps: Option<Use>, extra: u64) -> Result<(), Exhausted> {
    if let Some(u) = files {
        check(Resource::OpenFiles, u.used + extra, u.limit, 256)?;
    }
    if let Some(u) = maps {
        check(Resource::MemoryMaps, u.used + extra, u.limit, 1024)?;
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
    fn a_reading_stands_for_a_second_and_only_while_the_estimate_fits() {
        let start = std::time::Instant::now();
        let mut last = None;
        let count = std::cell::Cell::new(0);
        let reads = &count;
        let room = |used: u64| {
            move || {
                reads.set(reads.get() + 1);
                (
                    Some(Use {
                        used,
                        limit: 20_000,
                    }),
                    Some(Use {
                        used,
                        limit: 65_530,
                    }),
                )
            }
        };
        // 17,000 of 20,000 files leave 1,000 above the headroom of 2,000: 125 replicas of 8.
        admit(&mut last, start, room(17_000)).unwrap();
        for _ in 1..125 {
            admit(&mut last, start, room(17_000)).unwrap();
        }
        assert_eq!(
            reads.get(),
            1,
            "one reading for 125 replicas within a second"
        );
        // The 126th would not fit the estimate: a fresh reading decides, and it has no room.
        let refused = admit(&mut last, start, room(18_001)).unwrap_err();
        assert_eq!(refused.resource, Resource::OpenFiles);
        assert_eq!(reads.get(), 2);
        // A reading older than a second is taken again even when the estimate fits.
        admit(&mut last, start, room(100)).unwrap();
        admit(&mut last, start + READING_REUSED_FOR, room(100)).unwrap();
        assert_eq!(reads.get(), 4);
        // Memory maps are checked as files are.
        let mut last = None;
        let maps_full = || {
            (
                Some(Use {
                    used: 0,
                    limit: 20_000,
                }),
                Some(Use {
                    used: 60_000,
                    limit: 65_530,
                }),
            )
        };
        assert_eq!(
            admit(&mut last, start, maps_full).unwrap_err().resource,
            Resource::MemoryMaps
        );
    }
}
