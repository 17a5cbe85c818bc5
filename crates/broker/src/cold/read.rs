//! Cold reads: Fetch and ListOffsets below the local log.

use super::cursors::{chunk_size, Chunk, Opener, ReadAhead};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;
use bytes::{Bytes, BytesMut};
use strata_cold::{offset_for_timestamp_ranged, ColdCursor, ReadOptions};

/// Consecutive empty cold files one fetch skips before giving up.
const MAX_EMPTY_FILES: usize = 64;

/// The partition a cold read is of, and where its local log starts (reads
/// from there on are the local log's).
#[derive(Clone, Copy)]
pub(crate) struct ColdPartition<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) local_start: i64,
}

impl Broker {
    /// Reads from the cold tier at `offset` (below the local log start):
    /// whole rebuilt batches, up to `max_bytes` (at least one batch).
    pub(crate) async fn cold_read(
        &self,
        tp: ColdPartition<'_>,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, BrokerError> {
        let ColdPartition {
            topic, partition, ..
        } = tp;
        let Some(cold) = &self.cold else {
            return Ok(None);
        };
        // Files whose rows are all gone (aborted transactions, markers)
        // cover offsets but return nothing: move on to the next one.
        let start = offset;
        let mut offset = offset;
        for _ in 0..MAX_EMPTY_FILES {
            let entry = {
                let v = self.view();
                v.cold_segment(topic, partition, offset)
                    .or_else(|| v.next_cold_segment(topic, partition, offset))
            };
            let Some(entry) = entry else {
                // Past the last cold file after skipping empty ones: the
                // caller continues in the local log.
                return Ok((offset > start).then(Bytes::new));
            };
            let data = match self
                .cold_read_entry(cold, tp, &entry, offset, max_bytes)
                .await
            {
                Ok(data) => data,
                Err(e) => {
                    // Handled here for the operator (the client only gets
                    // KAFKA_STORAGE_ERROR and retries): which object, why.
                    self.metrics
                        .cold_read_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        partition = %format_args!("{topic}-{partition}"),
                        offset,
                        error = %e,
                        "cold read failed"
                    );
                    return Err(e);
                }
            };
            if !data.is_empty() {
                return Ok(Some(data));
            }
            offset = entry.last_offset + 1;
        }
        Err(BrokerError::Storage(format!(
            "{topic}-{partition}: more than {MAX_EMPTY_FILES} consecutive cold files without committed records from offset {start}"
        )))
    }

    /// Reads `entry` from `offset`. A consumer reading the cold tier asks
    /// for the offset after its last fetch, so the reader is kept between
    /// fetches and reads ahead of the consumer in chunks of up to
    /// `READ_AHEAD_MAX` bytes (see `cursors`); a larger fetch takes several
    /// chunks. Otherwise a new reader is opened, over the cached file or
    /// range-reading the object. Once a read-ahead has read the whole file,
    /// the next file's reader is started too (`prefetch`), so the consumer
    /// does not wait at the next file for a reader to open and read its
    /// first chunk.
    async fn cold_read_entry(
        &self,
        cold: &super::ColdTier,
        tp: ColdPartition<'_>,
        entry: &crate::cluster::SegmentEntry,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, BrokerError> {
        let key = entry.object_key.as_str();
        let failed = |e: strata_cold::ColdError| {
            BrokerError::Storage(format!("cannot read cold segment {key}: {e}"))
        };
        let batch_records = ReadOptions::default().batch_records;
        // The next file is read ahead once this one's reader has read it
        // to its end — or, for a file range-read from the store, from the
        // first fetch on: each file begins with round trips to the store
        // (footer, first row group) that the consumer would otherwise wait
        // for at every file boundary.
        let ranged = !cold.cache.has_object(key);
        // What a kept reader has for this fetch: its batches, and the
        // reader to keep for the next one (None if it has stopped).
        let continued = match cold.cursors.take(key, offset) {
            Some(ahead) => {
                let (found, finished) = take_chunks(ahead, max_bytes).await;
                if finished || ranged {
                    self.prefetch(cold, tp, entry, max_bytes, batch_records);
                }
                found
            }
            None => None,
        };
        let (batches, next) = match continued {
            Some(found) => {
                self.metrics
                    .cold_reads_continued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                found
            }
            // None kept, or its read failed: read afresh (once).
            None => {
                let task_failed =
                    |e| BrokerError::Storage(format!("cold read of {key} failed: {e}"));
                let (c, r) = match cold.cache.object(key) {
                    // Opening parses the footer (not the page index): CPU
                    // work, done with the read off the async workers.
                    Some(file) => {
                        let epoch = entry.epoch;
                        tokio::task::spawn_blocking(move || {
                            let mut c = ColdCursor::open(file, offset, epoch)?;
                            let r = c.read_blocking(max_bytes, batch_records);
                            Ok::<_, strata_cold::ColdError>((c, r))
                        })
                        .await
                        .map_err(task_failed)?
                        .map_err(failed)?
                    }
                    // Range reads wait on the store, and decoding and
                    // rebuilding are CPU work: both off the async workers,
                    // the reads driven by the runtime from a blocking thread.
                    None => {
                        let object = cold.ranged(key, entry.bytes);
                        let epoch = entry.epoch;
                        super::off_workers(async move {
                            let mut c = ColdCursor::open_ranged(object, offset, epoch).await?;
                            let r = c.read(max_bytes, batch_records).await;
                            Ok::<_, strata_cold::ColdError>((c, r))
                        })
                        .await
                        .map_err(task_failed)?
                        .map_err(failed)?
                    }
                };
                let batches = r.map_err(failed)?;
                let kept = keep(c, max_bytes, batch_records);
                if kept.is_none() || ranged {
                    // Read to its end (the consumer wants the next file
                    // next), or ranged (see above).
                    self.prefetch(cold, tp, entry, max_bytes, batch_records);
                }
                (batches, kept)
            }
        };
        // Kept for the next fetch unless nothing of this file is left.
        if let Some((at, kept)) = next {
            if at <= entry.last_offset {
                cold.cursors.put(key, at, kept);
            }
        }
        // The batches were split off one buffer: joining them is free.
        let mut out = BytesMut::new();
        for b in batches {
            out.unsplit(b);
        }
        self.metrics
            .cold_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out.freeze())
    }

    /// Starts reading the file after `entry` ahead, for the fetch that
    /// will ask for the offset after `entry`, unless that offset is the
    /// local log's (the consumer goes on there) or a reader is kept for
    /// it already. A file not in the cache is range-read: for a consumer
    /// reading the cold tier in order (what ends a read-ahead at the end
    /// of a file) that saves a round trip to the store per file, and a
    /// wrong guess costs a footer and a row group.
    fn prefetch(
        &self,
        cold: &super::ColdTier,
        tp: ColdPartition<'_>,
        entry: &crate::cluster::SegmentEntry,
        max_bytes: usize,
        batch_records: usize,
    ) {
        let at = entry.last_offset + 1;
        if at >= tp.local_start {
            return;
        }
        let next = {
            let v = self.view();
            v.cold_segment(tp.topic, tp.partition, at)
                .or_else(|| v.next_cold_segment(tp.topic, tp.partition, at))
        };
        let Some(next) = next else { return };
        if cold.cursors.contains(&next.object_key, at) {
            return;
        }
        let epoch = next.epoch;
        let open: Opener = match cold.cache.object(&next.object_key) {
            Some(file) => Box::new(move || ColdCursor::open(file, at, epoch)),
            // Not cached: the read-ahead's thread range-reads it (footer,
            // then the first row group), on this runtime.
            None => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let object = cold.ranged(&next.object_key, next.bytes);
                Box::new(move || rt.block_on(ColdCursor::open_ranged(object, at, epoch)))
            }
        };
        let ahead = ReadAhead::open(open, max_bytes, batch_records);
        cold.cursors.put(&next.object_key, at, ahead);
    }

    /// The first cold record with a timestamp `>= ts`: only the first
    /// manifest entry whose max timestamp reaches `ts` is read.
    pub(crate) async fn cold_offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, BrokerError> {
        let Some(cold) = &self.cold else {
            return Ok(None);
        };
        let entry = self
            .view()
            .segments
            .get(&(topic.to_string(), partition))
            .and_then(|m| m.values().find(|e| e.max_timestamp >= ts).cloned());
        let Some(entry) = entry else { return Ok(None) };
        // The footer and one row group's offsets and timestamps, not the
        // whole file (segments are up to `segment.bytes`, 1 GiB).
        let object = cold.ranged(&entry.object_key, entry.bytes);
        let key = &entry.object_key;
        super::off_workers(offset_for_timestamp_ranged(object, ts))
            .await
            .map_err(|e| BrokerError::Storage(format!("cold lookup in {key} failed: {e}")))?
            .map_err(|e| {
                BrokerError::Storage(format!(
                    "cannot look up timestamp {ts} in cold segment {key}: {e}"
                ))
            })
    }

    /// First offset of the whole log: the earliest in either tier, but never
    /// below a log start offset set by DeleteRecords.
    pub(crate) fn earliest_offset(&self, p: &Partition) -> i64 {
        let local = p.log_start_offset();
        let v = self.view();
        let stored = v
            .cold_start(&p.topic, p.index)
            .map_or(local, |c| c.min(local));
        let floor = v
            .states
            .get(&(p.topic.clone(), p.index))
            .map_or(0, |s| s.state.log_start_offset);
        stored.max(floor)
    }
}

/// A kept reader's batches for a fetch, and the reader to keep for the
/// next one (at the offset it asks for), if it goes on.
type Continued = (Vec<BytesMut>, Option<(i64, ReadAhead)>);

/// What a fetch of `max_bytes` takes from a read-ahead: its chunks until
/// another would not fit (at least one) or the file ends, and the reader
/// to keep if it goes on; and whether the reader has now read its whole
/// file (once per reader: time to read the next file ahead). None if its
/// first chunk failed or was read for a larger fetch than this one (not
/// taken: the reader is dropped and this fetch reads afresh); a later
/// chunk that fails ends the fetch with what it has and drops the reader.
async fn take_chunks(mut ahead: ReadAhead, max_bytes: usize) -> (Option<Continued>, bool) {
    let size = chunk_size(max_bytes);
    let mut out: Vec<BytesMut> = Vec::new();
    let (mut took, mut taken) = (false, 0);
    // Where the reader goes on from, if this fetch leaves it reading.
    let mut goes_on = None;
    while let Some(Chunk {
        batches: Ok(batches),
        max_bytes: read_for,
        next_offset,
        last,
    }) = ahead.next(size).await
    {
        if read_for > max_bytes {
            break;
        }
        took = true;
        taken += batches.iter().map(BytesMut::len).sum::<usize>();
        out.extend(batches);
        if last {
            break;
        }
        if taken.saturating_add(size) > max_bytes {
            goes_on = Some(next_offset);
            break;
        }
    }
    let finished = ahead.finished_now();
    let found = took.then(|| (out, goes_on.map(|at| (at, ahead))));
    (found, finished)
}

/// How a reader is kept after a fresh read for a fetch of `max_bytes`, at
/// the offset the next fetch will ask for, reading ahead; None once its
/// file is read.
fn keep(c: ColdCursor, max_bytes: usize, batch_records: usize) -> Option<(i64, ReadAhead)> {
    if c.is_exhausted() {
        return None;
    }
    let at = c.next_offset();
    Some((at, ReadAhead::start(c, max_bytes, batch_records)))
}
