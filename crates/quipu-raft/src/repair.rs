//! Damaged replicas: finding damage in a log that will not open, and setting the damaged files
//! aside so that the replica starts over empty, keeping its vote, and abstains until it holds
//! again everything it had acknowledged (`docs/internals/replication.md`).
//!
//! The switch is atomic: a new directory `NAME.repair` is made whole and durable (the vote, and a
//! synced flush mark at least as high as anything the old log reached), then `NAME` is renamed to
//! `NAME.damaged-<ms>` and `NAME.repair` to `NAME`. A crash between the two renames leaves
//! `NAME.repair` alone, which [`finish_repair`] completes before the replica opens.

use std::path::{Path, PathBuf};

use quipu_storage::{
    Log, LogConfig, MarkFile, OpenError, ReadError, read_state_file, write_state_file,
};

use crate::log_store::{FLUSH_MARK_FILE, META_BYTES_MAX, META_FILE, RaftMeta};

/// Bytes read per step of a damage scan.
const SCAN_BYTES: u64 = 4 * 1024 * 1024;

/// Setting a damaged replica aside failed: it stays as it is (and does not open).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A file operation failed.
    #[error("i/o error while setting aside the damaged replica in {dir}")]
    Io {
        /// The replica's directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The new replica's vote could not be written.
    #[error("cannot write the vote of the rebuilt replica in {dir}")]
    StateFile {
        /// The replica's directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: quipu_storage::StateFileError,
    },
    /// The vote cannot be read: starting over without it could vote twice in one term.
    #[error("the vote of the damaged replica in {dir} cannot be read: not repaired")]
    VoteRead {
        /// The replica's directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: quipu_storage::StateFileError,
    },
    /// The vote does not decode: starting over without it could vote twice in one term.
    #[error("the vote of the damaged replica in {dir} does not decode: not repaired")]
    VoteDecode {
        /// The replica's directory.
        dir: PathBuf,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The vote to carry over does not encode.
    #[error("the vote of the damaged replica in {dir} does not encode: not repaired")]
    VoteEncode {
        /// The replica's directory.
        dir: PathBuf,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
}

/// Damage found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// What is wrong, naming the file and position.
    pub description: String,
    /// Where the log ends (its next index), when it opened: the replica had acknowledged at
    /// least that much.
    pub next_index: Option<u64>,
}

/// What is wrong with the log in `dir`, if its data is damaged: a corrupt segment at open, or an
/// entry that fails its checks when read. `None` when it opens and every entry reads back (or the
/// failure is not damage: a lock, a missing directory).
pub fn find_damage(dir: &Path, config: LogConfig) -> Option<Damage> {
    if !dir.exists() {
        return None;
    }
    let log = match Log::open(dir, config) {
        Ok(log) => log,
        Err(e @ OpenError::Corrupt { .. }) => {
            return Some(Damage {
                description: e.to_string(),
                next_index: None,
            });
        }
        Err(_) => return None,
    };
    let mut next = log.first_index();
    while next < log.next_index() {
        match log.read_entries(next, log.next_index(), SCAN_BYTES) {
            Ok(entries) => match entries.last() {
                Some(last) => next = last.index + 1,
                None => return None,
            },
            Err(e @ ReadError::Corrupt { .. }) => {
                return Some(Damage {
                    description: e.to_string(),
                    next_index: Some(log.next_index()),
                });
            }
            Err(_) => return None,
        }
    }
    None
}

fn io_error(dir: &Path) -> impl FnOnce(std::io::Error) -> RepairError + '_ {
    move |source| RepairError::Io {
        dir: dir.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The directory a repair builds before it switches.
fn repair_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".repair");
    dir.with_file_name(name)
}

/// Replaces the damaged replica in `dir` by an empty one with the same vote (uncommitted, so that
/// it cannot resume leadership without an election) and a synced flush mark at least as high as
/// what the old log reached (`reached`, the old mark, the newest segment's base index), so that it
/// abstains until it re-replicated that much. Returns where the old files went.
pub fn set_aside(dir: &Path, reached: Option<u64>) -> Result<PathBuf, RepairError> {
    let body = read_state_file(dir, META_FILE, META_BYTES_MAX).map_err(|source| {
        RepairError::VoteRead {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    let meta: RaftMeta = match body {
        Some(body) => postcard::from_bytes(&body).map_err(|source| RepairError::VoteDecode {
            dir: dir.to_path_buf(),
            source,
        })?,
        None => RaftMeta::default(),
    };
    let (_, old_mark) = MarkFile::open(dir, FLUSH_MARK_FILE).map_err(io_error(dir))?;
    let newest_base = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_suffix(".log")?.to_string();
            digits.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    let bound = old_mark
        .unwrap_or(0)
        .max(newest_base)
        .max(reached.unwrap_or(0));

    let fresh = repair_dir(dir);
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io_error(dir))?;
    }
    std::fs::create_dir(&fresh).map_err(io_error(dir))?;
    // Only the vote carries over: the purge point belonged to the old log and its snapshot.
    let kept = RaftMeta {
        vote: meta.vote.map(|vote| openraft::Vote {
            committed: false,
            ..vote
        }),
        last_purged: None,
    };
    let body = postcard::to_allocvec(&kept).map_err(|source| RepairError::VoteEncode {
        dir: dir.to_path_buf(),
        source,
    })?;
    write_state_file(&fresh, META_FILE, &body).map_err(|source| RepairError::StateFile {
        dir: dir.to_path_buf(),
        source,
    })?;
    let (mark, _) = MarkFile::open(&fresh, FLUSH_MARK_FILE).map_err(io_error(dir))?;
    mark.write(bound).map_err(io_error(dir))?;
    // This mark is all that keeps the empty replica from voting: it must survive a power loss.
    mark.sync().map_err(io_error(dir))?;
    sync_dir(&fresh).map_err(io_error(dir))?;
    // `NAME.repair` itself must be durable before `NAME` goes: a power loss must never leave
    // neither (a replica with no vote could vote twice in a term).
    if let Some(parent) = dir.parent() {
        sync_dir(parent).map_err(io_error(dir))?;
    }

    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{millis}"));
    let aside = dir.with_file_name(name);
    std::fs::rename(dir, &aside).map_err(io_error(dir))?;
    std::fs::rename(&fresh, dir).map_err(io_error(dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).map_err(io_error(dir))?;
    }
    Ok(aside)
}

/// Completes a repair that a crash interrupted between its two renames. Returns whether it did.
pub fn finish_repair(dir: &Path) -> Result<bool, RepairError> {
    let fresh = repair_dir(dir);
    if dir.exists() || !fresh.exists() {
        return Ok(false);
    }
    std::fs::rename(&fresh, dir).map_err(io_error(dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).map_err(io_error(dir))?;
    }
    Ok(true)
}
