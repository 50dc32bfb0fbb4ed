//! Small state files replaced atomically: the Raft vote and purge point, a state machine's
//! snapshot. Layout: `docs/format/state-file.md`.
//!
//! Invariant: after [`write_state_file`] returns, a crash leaves either the old or the new content,
//! never a mix: the new content goes to `NAME.tmp`, is synced, renamed over `NAME`, and the
//! directory is synced. A read verifies length and CRC and never returns damaged bytes.

use std::path::{Path, PathBuf};

use crate::{fault, io};

const MAGIC: [u8; 8] = *b"QUIPUSTF";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 24;

/// Reading or writing a state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// A file operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but its header, length or CRC is wrong.
    #[error("corrupt state file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The body is larger than the caller's limit.
    #[error("state file {path} holds {len} bytes, more than the limit {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its body length.
        len: u64,
        /// The limit.
        max: usize,
    },
}

fn crc(len: u32, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Durably replaces `dir/name` with `body`.
pub fn write_state_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), StateFileError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateFileError::Io { path, source }
    };
    let len = u32::try_from(body.len()).map_err(|_| StateFileError::TooLarge {
        path: path.clone(),
        len: body.len() as u64,
        max: u32::MAX as usize,
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&crc(len, body).to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(body);
    if tmp.exists() {
        io::remove(&tmp).map_err(io_err(&tmp))?;
    }
    let file = io::create(&tmp).map_err(io_err(&tmp))?;
    io::write_at(&file, &tmp, &bytes, 0).map_err(io_err(&tmp))?;
    io::sync_all(&file, &tmp).map_err(io_err(&tmp))?;
    io::rename(&tmp, &path).map_err(io_err(&path))?;
    io::sync_dir(dir).map_err(io_err(dir))?;
    fault::on_sync(&path);
    Ok(())
}

/// Reads `dir/name`: `None` if it does not exist, an error if it is damaged or its body is larger
/// than `max_bytes`.
pub fn read_state_file(
    dir: &Path,
    name: &str,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, StateFileError> {
    use std::io::Read;
    let path = dir.join(name);
    let corrupt = |reason: &str| StateFileError::Corrupt {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path, source }),
    };
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(|_| corrupt("shorter than its header"))?;
    if header[0..8] != MAGIC || header[8..10] != VERSION.to_le_bytes() {
        return Err(corrupt("bad magic or version"));
    }
    if header[10..12] != [0, 0] || header[20..24] != [0, 0, 0, 0] {
        return Err(corrupt("reserved header bytes are not zero"));
    }
    let stored_crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    let body_len = usize::try_from(len).map_err(|_| corrupt("length"))?;
    if body_len > max_bytes {
        return Err(StateFileError::TooLarge {
            path,
            len: u64::from(len),
            max: max_bytes,
        });
    }
    let mut body = Vec::with_capacity(body_len);
    file.take(u64::from(len) + 1)
        .read_to_end(&mut body)
        .map_err(|source| StateFileError::Io {
            path: path.clone(),
            source,
        })?;
    if body.len() != body_len {
        return Err(corrupt("body length differs from its header"));
    }
    if crc(len, &body) != stored_crc {
        return Err(corrupt("crc mismatch"));
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_replaces_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state_file(dir.path(), "vote", 100).unwrap(), None);
        write_state_file(dir.path(), "vote", b"first").unwrap();
        write_state_file(dir.path(), "vote", b"second value").unwrap();
        assert_eq!(
            read_state_file(dir.path(), "vote", 100).unwrap().unwrap(),
            b"second value"
        );
        assert!(matches!(
            read_state_file(dir.path(), "vote", 3),
            Err(StateFileError::TooLarge { .. })
        ));
        let path = dir.path().join("vote");
        let clean = std::fs::read(&path).unwrap();
        for at in 0..clean.len() {
            let mut bad = clean.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                read_state_file(dir.path(), "vote", 100).is_err(),
                "damage at byte {at} went unnoticed"
            );
        }
        std::fs::write(&path, &clean[..clean.len() - 1]).unwrap();
        assert!(read_state_file(dir.path(), "vote", 100).is_err());
    }
}
