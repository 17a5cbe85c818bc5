//! Broker counters and request-time histograms, rendered by the HTTP edge
//! in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Metrics {
    pub produce_requests: AtomicU64,
    pub produce_bytes: AtomicU64,
    /// Partition appends refused (any error).
    pub produce_errors: AtomicU64,
    pub fetch_responses: AtomicU64,
    pub fetch_bytes: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub requests_total: AtomicU64,
    pub request_errors: AtomicU64,
    pub malformed_frames: AtomicU64,
    pub offloaded_segments: AtomicU64,
    pub offload_errors: AtomicU64,
    pub cold_reads: AtomicU64,
    /// Cold reads that failed (an object missing, unreadable or corrupt);
    /// each is logged, and the fetch gets a storage error for that
    /// partition.
    pub cold_read_errors: AtomicU64,
    /// Cold reads that went on from a kept cursor (see `cold::cursors`).
    pub cold_reads_continued: AtomicU64,
    /// fsyncs of partition logs: before acknowledging a produce (acks=all
    /// as `AckAllFsync` says, `flush.messages`), by `flush.ms`, at
    /// shutdown. Shared with the durability step.
    pub log_flushes: Arc<AtomicU64>,
    /// How long requests took, by request type (the Kafka edge records them
    /// under the request's API key and names them when rendered).
    pub request_times: RequestTimes,
    /// How late a task woken on the broker's async runtime started running
    /// ([`probe_wakeups`]).
    pub wakeup_delays: TimeHistogram,
    /// Error codes returned to clients (the Kafka edge records them where
    /// it decides them: mapping a domain error, or refusing a request).
    pub error_codes: ErrorCodes,
}

impl Metrics {
    pub fn record_produce(&self, bytes: usize) {
        self.produce_requests.fetch_add(1, Ordering::Relaxed);
        self.produce_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn record_fetch(&self, bytes: usize) {
        self.fetch_responses.fetch_add(1, Ordering::Relaxed);
        self.fetch_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the request-time buckets, in seconds: fine below a
/// millisecond (where produce and fetch at the tail live), coarse up to a
/// Fetch's longest wait.
pub const TIME_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram of durations with the [`TIME_BUCKETS`] bounds (plus one for
/// everything longer) and their sum; the count is the buckets' total.
/// Recording is two relaxed atomic adds, no lock.
#[derive(Debug, Default)]
pub struct TimeHistogram {
    buckets: [AtomicU64; TIME_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// What a [`TimeHistogram`] held at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSnapshot {
    /// `(upper bound in seconds, durations at or below it)`, cumulative, in
    /// [`TIME_BUCKETS`] order; the `+Inf` bucket is `count`.
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl TimeHistogram {
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = TIME_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(TIME_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn snapshot(&self) -> TimeSnapshot {
        let mut running = 0;
        let cumulative = TIME_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| {
                running += n.load(Ordering::Relaxed);
                (bound, running)
            })
            .collect();
        // From the same loads as the finite buckets, so `+Inf` is never
        // below the last of them.
        let count = running + self.buckets[TIME_BUCKETS.len()].load(Ordering::Relaxed);
        TimeSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
        }
    }
}

/// How often [`probe_wakeups`] wakes up.
pub const WAKEUP_PROBE_PERIOD: Duration = Duration::from_millis(10);

/// Records in `delays`, every `period` until `stop`, how late a timer
/// task on this runtime started running after its deadline. A request
/// arriving on a connection wakes its task the same way, so a delay here
/// is one every request arriving then waited too, before the broker
/// counted it as arrived (request times start when a request is read).
/// It grows when every worker is busy or blocked, or when the process
/// does not get a core. Tokio's timers tick every millisecond, so delays
/// below that are the timer's rounding.
pub async fn probe_wakeups(
    delays: &TimeHistogram,
    period: Duration,
    stop: &tokio_util::sync::CancellationToken,
) {
    loop {
        let due = tokio::time::Instant::now() + period;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => return,
        }
        delays.record(tokio::time::Instant::now().saturating_duration_since(due));
    }
}

/// One value per small integer code (an API key, an error code), in slots
/// for codes `first..first + len`; a code out of that range shares the
/// last slot.
#[derive(Debug)]
pub struct PerCode<T> {
    first: i16,
    slots: Vec<T>,
}

impl<T: Default> PerCode<T> {
    fn new(first: i16, len: usize) -> Self {
        Self {
            first,
            slots: (0..len.max(1)).map(|_| T::default()).collect(),
        }
    }
}

impl<T> PerCode<T> {
    fn slot(&self, code: i16) -> &T {
        let last = self.slots.len() - 1;
        let i =
            usize::try_from(i32::from(code) - i32::from(self.first)).map_or(last, |i| i.min(last));
        &self.slots[i]
    }

    fn codes(&self) -> impl Iterator<Item = (i16, &T)> {
        let first = self.first;
        self.slots
            .iter()
            .enumerate()
            .map(move |(i, v)| (first.saturating_add(i as i16), v))
    }
}

/// Request times by request type, indexed by a small non-negative code
/// (the Kafka edge uses the API key: below 100).
pub type RequestTimes = PerCode<TimeHistogram>;

impl Default for RequestTimes {
    fn default() -> Self {
        Self::new(0, 128)
    }
}

impl RequestTimes {
    pub fn record(&self, code: i16, d: Duration) {
        self.slot(code).record(d);
    }

    /// The request types seen so far, with their histograms.
    pub fn seen(&self) -> impl Iterator<Item = (i16, &TimeHistogram)> {
        self.codes().filter(|(_, h)| h.count() > 0)
    }
}

/// How many times each error code was returned (Kafka error codes: -1,
/// and 1 to a little over 100). Recording is one relaxed atomic add.
pub type ErrorCodes = PerCode<AtomicU64>;

impl Default for ErrorCodes {
    fn default() -> Self {
        Self::new(-1, 256)
    }
}

impl ErrorCodes {
    /// Counts `code` (0, no error, is not counted); returns it.
    pub fn record(&self, code: i16) -> i16 {
        if code != 0 {
            self.slot(code).fetch_add(1, Ordering::Relaxed);
        }
        code
    }

    /// The codes returned so far, with their counts.
    pub fn seen(&self) -> impl Iterator<Item = (i16, u64)> + '_ {
        self.codes()
            .map(|(c, n)| (c, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_that_holds_them() {
        let h = TimeHistogram::default();
        for us in [50, 100, 101, 900, 12_000, 30_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        let at = |bound: f64| s.cumulative.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.0001), 2, "50 and 100 µs (a bound is inclusive)");
        assert_eq!(at(0.00025), 3);
        assert_eq!(at(0.001), 4);
        assert_eq!(at(0.01), 4);
        assert_eq!(at(0.025), 5);
        assert_eq!(at(10.0), 5, "30 s is above every finite bound");
        assert_eq!(s.count, 6);
        assert!((s.sum_seconds - 30.013151).abs() < 1e-9);
    }

    /// A runtime held up for 60 ms (a blocking call on its only thread)
    /// shows as a wakeup about that late.
    #[test]
    fn a_blocked_runtime_shows_as_a_late_wakeup() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let delays = std::sync::Arc::new(TimeHistogram::default());
        let stop = tokio_util::sync::CancellationToken::new();
        rt.block_on(async {
            let probe = {
                let (delays, stop) = (delays.clone(), stop.clone());
                tokio::spawn(async move {
                    probe_wakeups(&delays, Duration::from_millis(5), &stop).await
                })
            };
            tokio::time::sleep(Duration::from_millis(12)).await;
            std::thread::sleep(Duration::from_millis(60));
            tokio::time::sleep(Duration::from_millis(30)).await;
            stop.cancel();
            probe.await.unwrap();
        });
        let s = delays.snapshot();
        let within_50ms = s.cumulative.iter().find(|(b, _)| *b == 0.05).unwrap().1;
        assert!(s.count >= 3, "the probe ran ({} wakeups)", s.count);
        assert!(s.count > within_50ms, "a wakeup over 50 ms late: {s:?}");
    }

    #[test]
    fn error_codes_are_counted_by_code_and_no_error_is_not() {
        let e = ErrorCodes::default();
        assert_eq!(e.record(6), 6);
        e.record(6);
        e.record(-1);
        e.record(0);
        e.record(i16::MAX);
        e.record(i16::MIN);
        let seen: Vec<(i16, u64)> = e.seen().collect();
        assert_eq!(
            seen,
            vec![(-1, 1), (6, 2), (254, 2)],
            "MIN and MAX in the last slot"
        );
    }

    #[test]
    fn request_types_are_kept_apart_and_out_of_range_codes_counted() {
        let t = RequestTimes::default();
        t.record(0, Duration::from_millis(1));
        t.record(1, Duration::from_millis(2));
        t.record(1, Duration::from_millis(3));
        t.record(-5, Duration::from_millis(4));
        t.record(i16::MAX, Duration::from_millis(5));
        let seen: Vec<(i16, u64)> = t.seen().map(|(c, h)| (c, h.count())).collect();
        assert_eq!(seen, vec![(0, 1), (1, 2), (127, 2)]);
    }
}
