//! Mark files: one number, rewritten in place and **never synced**, that tells a later start how
//! far something got before a crash. Layout: `docs/format/mark-file.md`.
//!
//! The owner writes a mark only *after* what it names is durable. A kill keeps the page cache, so
//! the mark survives and is exact; a power loss may lose the last writes of the mark (it then
//! reads older, or absent), never make it name more than was durable. So a mark is a lower bound
//! of what was durable, which is what detecting lost data needs: data that ends before a mark
//! was damaged after it was made durable. (One user differs: a poisoned log's note of where its
//! untrusted entries begin, `crate::suspect`, which needs to outlast a process, not a power loss.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::io;

const MAGIC: [u8; 4] = *b"QMRK";
/// Bytes of a mark file.
pub const MARK_LEN: usize = 16;

/// An open mark file.
#[derive(Debug)]
pub struct MarkFile {
    file: File,
    path: PathBuf,
    /// The value last written (or read at open); writes happen under this lock, in order.
    value: Mutex<Option<u64>>,
}

fn crc(head: &[u8]) -> u32 {
    crc32fast::hash(head)
}

fn encode(value: u64) -> [u8; MARK_LEN] {
    let mut bytes = [0u8; MARK_LEN];
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4..12].copy_from_slice(&value.to_le_bytes());
    let crc = crc(&bytes[..12]);
    bytes[12..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The value of a mark's bytes; `None` for anything but one whole, intact mark (a file never
/// written, cut, zeroed by a power loss, or damaged).
fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != MARK_LEN || bytes[..4] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    if stored != crc(&bytes[..12]) {
        return None;
    }
    Some(u64::from_le_bytes(bytes[4..12].try_into().ok()?))
}

impl MarkFile {
    /// Opens (creating if needed) `dir/name` and reads its value.
    pub fn open(dir: &Path, name: &str) -> std::io::Result<(MarkFile, Option<u64>)> {
        let path = dir.join(name);
        let existed = path.exists();
        let file = if existed {
            io::open_rw(&path)?
        } else {
            // Its directory entry is not synced either: a lost mark only weakens the check.
            io::create(&path)?
        };
        // At most one byte past a mark: a longer file is not a mark, however long it is.
        let mut bytes = Vec::with_capacity(MARK_LEN + 1);
        if existed {
            use std::io::Read;
            (&file).take(MARK_LEN as u64 + 1).read_to_end(&mut bytes)?;
        }
        let value = decode(&bytes);
        let mark = MarkFile {
            file,
            path,
            value: Mutex::new(value),
        };
        Ok((mark, value))
    }

    /// Replaces the value (one 16-byte write at the start of the file, not synced).
    pub fn write(&self, value: u64) -> std::io::Result<()> {
        let mut current = self.value.lock().unwrap_or_else(|e| e.into_inner());
        io::write_at(&self.file, &self.path, &encode(value), 0)?;
        *current = Some(value);
        Ok(())
    }

    /// Makes the value durable (`fdatasync`), for the rare writer that must not lose it.
    pub fn sync(&self) -> std::io::Result<()> {
        let _current = self.value.lock().unwrap_or_else(|e| e.into_inner());
        io::sync_data(&self.file, &self.path)
    }

    /// Lowers the value to `value` if it is higher (or unset); never raises it.
    pub fn lower_to(&self, value: u64) -> std::io::Result<()> {
        let mut current = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_some_and(|c| c <= value) {
            return Ok(());
        }
        io::write_at(&self.file, &self.path, &encode(value), 0)?;
        *current = Some(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_anything_else_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, value) = MarkFile::open(dir.path(), "m").unwrap();
        assert_eq!(value, None);
        mark.write(41).unwrap();
        mark.write(42).unwrap();
        drop(mark);
        let (_, value) = MarkFile::open(dir.path(), "m").unwrap();
        assert_eq!(value, Some(42));
        let (mark, _) = MarkFile::open(dir.path(), "m").unwrap();
        mark.lower_to(50).unwrap();
        mark.lower_to(40).unwrap();
        drop(mark);
        assert_eq!(MarkFile::open(dir.path(), "m").unwrap().1, Some(40));
        mark_back_to(dir.path(), 42);
        let mut bytes = std::fs::read(dir.path().join("m")).unwrap();
        for at in 0..MARK_LEN {
            bytes[at] ^= 0x10;
            assert_eq!(decode(&bytes), None, "a flip at byte {at}");
            bytes[at] ^= 0x10;
        }
        assert_eq!(decode(&bytes), Some(42));
        assert_eq!(decode(&bytes[..8]), None);
        assert_eq!(decode(&[0; MARK_LEN]), None);
        // A mark followed by anything is not a mark (and is not read whole).
        let mut longer = encode(7).to_vec();
        longer.extend_from_slice(&[1; 4096]);
        std::fs::write(dir.path().join("long"), &longer).unwrap();
        assert_eq!(MarkFile::open(dir.path(), "long").unwrap().1, None);
    }

    fn mark_back_to(dir: &Path, value: u64) {
        MarkFile::open(dir, "m").unwrap().0.write(value).unwrap();
    }
}
