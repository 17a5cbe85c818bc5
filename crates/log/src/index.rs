//! Sparse indexes of one segment, kept in memory and appended to a file.
//!
//! Offset index entries are `(relative offset u32, file position u32)`, time
//! index entries `(running max timestamp i64, relative offset u32)`, both
//! big-endian. Entries are only ever appended and are monotonic in every
//! field, so lookups are binary searches. A file whose length is not a whole
//! number of entries, or whose entries are not monotonic, is discarded and
//! rebuilt from the segment by the caller.

use crate::error::{IoContext, LogError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

pub(crate) struct Indexes {
    offset_path: PathBuf,
    time_path: PathBuf,
    offset_file: File,
    time_file: File,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Encoded entries not yet written: one append's entries go to the files
    /// in one write each (see [`Indexes::write_pending`]).
    offset_buf: Vec<u8>,
    time_buf: Vec<u8>,
}

impl Indexes {
    /// Creates empty index files (truncating any existing ones).
    pub fn create(offset_path: PathBuf, time_path: PathBuf) -> Result<Self, LogError> {
        let offset_file = open(&offset_path, true)?;
        let time_file = open(&time_path, true)?;
        Ok(Self {
            offset_path,
            time_path,
            offset_file,
            time_file,
            offsets: Vec::new(),
            times: Vec::new(),
            offset_buf: Vec::new(),
            time_buf: Vec::new(),
        })
    }

    /// Loads index files; `None` if missing or malformed (caller rebuilds).
    pub fn load(offset_path: PathBuf, time_path: PathBuf) -> Result<Option<Self>, LogError> {
        let (Ok(ob), Ok(tb)) = (std::fs::read(&offset_path), std::fs::read(&time_path)) else {
            return Ok(None);
        };
        if ob.len() % 8 != 0 || tb.len() % 12 != 0 {
            return Ok(None);
        }
        let offsets: Vec<OffsetEntry> = ob
            .chunks_exact(8)
            .map(|c| OffsetEntry {
                rel_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let times: Vec<TimeEntry> = tb
            .chunks_exact(12)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                rel_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
            })
            .collect();
        let monotonic = offsets
            .windows(2)
            .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
            && times
                .windows(2)
                .all(|w| w[0].timestamp < w[1].timestamp && w[0].rel_offset <= w[1].rel_offset);
        if !monotonic {
            return Ok(None);
        }
        let offset_file = open(&offset_path, false)?;
        let time_file = open(&time_path, false)?;
        Ok(Some(Self {
            offset_path,
            time_path,
            offset_file,
            time_file,
            offsets,
            times,
            offset_buf: Vec::new(),
            time_buf: Vec::new(),
        }))
    }

    /// Adds an entry; it reaches the file at the next [`Self::write_pending`].
    pub fn append_offset(&mut self, e: OffsetEntry) {
        self.offset_buf
            .extend_from_slice(&e.rel_offset.to_be_bytes());
        self.offset_buf.extend_from_slice(&e.position.to_be_bytes());
        self.offsets.push(e);
    }

    /// Adds an entry; it reaches the file at the next [`Self::write_pending`].
    pub fn append_time(&mut self, e: TimeEntry) {
        self.time_buf.extend_from_slice(&e.timestamp.to_be_bytes());
        self.time_buf.extend_from_slice(&e.rel_offset.to_be_bytes());
        self.times.push(e);
    }

    /// Writes the entries added since the last call, one write per file.
    /// Lookups use the in-memory entries, so this only bounds what a crash
    /// can lose, and a lost or torn tail is rebuilt from the segment on open.
    pub fn write_pending(&mut self) -> Result<(), LogError> {
        if !self.offset_buf.is_empty() {
            self.offset_file
                .write_all(&self.offset_buf)
                .at(&self.offset_path)?;
            self.offset_buf.clear();
        }
        if !self.time_buf.is_empty() {
            self.time_file
                .write_all(&self.time_buf)
                .at(&self.time_path)?;
            self.time_buf.clear();
        }
        Ok(())
    }

    /// Position of the last indexed batch starting at or before `rel_offset`.
    pub fn floor_position(&self, rel_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Relative offset from which to scan for the first batch whose max
    /// timestamp is `>= ts`: the last entry whose running max is below `ts`.
    pub fn time_floor(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].rel_offset
        }
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.offset_file.sync_data().at(&self.offset_path)?;
        self.time_file.sync_data().at(&self.time_path)
    }

    /// New handles on both index files (to sync them elsewhere).
    pub fn try_clone_files(&self) -> Result<Vec<(File, PathBuf)>, LogError> {
        Ok(vec![
            (
                self.offset_file.try_clone().at(&self.offset_path)?,
                self.offset_path.clone(),
            ),
            (
                self.time_file.try_clone().at(&self.time_path)?,
                self.time_path.clone(),
            ),
        ])
    }

    pub fn delete_files(&self) {
        for p in [&self.offset_path, &self.time_path] {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::warn!(path = %p.display(), error = %e, "failed to delete index file");
            }
        }
    }
}

fn open(path: &Path, truncate: bool) -> Result<File, LogError> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    if truncate {
        // Start from an empty file; append mode cannot be combined with truncate.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(path),
        }
    }
    o.open(path).at(path)
}
