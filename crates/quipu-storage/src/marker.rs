//! The clean-shutdown marker: `clean_shutdown` in the log directory, written by `Log::close`
//! after everything is synced, removed (durably) by `Log::open` before anything else changes.
//! Layout: `docs/format/segment.md#clean-shutdown-marker`.

use std::path::Path;

use crate::error::Failure;
use crate::frame::{u32_at, u64_at};
use crate::io;

const NAME: &str = "clean_shutdown";
const MAGIC: [u8; 8] = *b"QUIPUCLN";
const LEN: usize = 32;
/// The marker's own version (it does not follow the segments' format version).
const VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMarker {
    pub active_base_index: u64,
    pub active_data_len: u64,
}

impl CleanMarker {
    fn encode(&self) -> [u8; LEN] {
        let mut buf = [0u8; LEN];
        buf[0..8].copy_from_slice(&MAGIC);
        buf[8..10].copy_from_slice(&VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.active_base_index.to_le_bytes());
        buf[24..32].copy_from_slice(&self.active_data_len.to_le_bytes());
        let crc = crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<CleanMarker> {
        let buf: &[u8; LEN] = buf.try_into().ok()?;
        if buf[0..8] != MAGIC || buf[8..10] != VERSION.to_le_bytes() || u32_at(buf, 12) != crc(buf)
        {
            return None;
        }
        Some(CleanMarker {
            active_base_index: u64_at(buf, 16),
            active_data_len: u64_at(buf, 24),
        })
    }

    /// Writes the marker durably.
    pub fn write(&self, dir: &Path) -> Result<(), Failure> {
        let path = dir.join(NAME);
        if path.exists() {
            io::remove(&path).map_err(Failure::io(&path))?;
        }
        let file = io::create(&path).map_err(Failure::io(&path))?;
        io::write_at(&file, &path, &self.encode(), 0).map_err(Failure::io(&path))?;
        io::sync_all(&file, &path).map_err(Failure::io(&path))?;
        io::sync_dir(dir).map_err(Failure::io(dir))
    }

    /// Reads and durably removes the marker; a damaged marker counts as none.
    pub fn take(dir: &Path) -> Result<Option<CleanMarker>, Failure> {
        let path = dir.join(NAME);
        let mut bytes = Vec::with_capacity(LEN + 1);
        match std::fs::File::open(&path) {
            // At most one byte more than a marker: enough to tell a longer file is not one.
            Ok(file) => {
                use std::io::Read;
                file.take(LEN as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| Failure::Io {
                        path: path.clone(),
                        source,
                    })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::Io { path, source: e }),
        }
        io::remove(&path).map_err(Failure::io(&path))?;
        io::sync_dir(dir).map_err(Failure::io(dir))?;
        Ok(CleanMarker::decode(&bytes))
    }
}

fn crc(buf: &[u8; LEN]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..12]);
    hasher.update(&buf[16..]);
    hasher.finalize()
}
