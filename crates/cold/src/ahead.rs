//! Store reads ahead of a ranged cold read.
//!
//! The async Parquet reader asks for one row group's column chunks at a
//! time and decodes them before it asks for the next: against an object
//! store, whose every request waits a round trip (tens of milliseconds on
//! S3), a consumer's cold read would wait for each row group in turn.
//! [`Ahead`] knows which ranges the reader will ask for, row group by row
//! group ([`Ahead::plan`]); each time the reader asks for one row group's,
//! it starts fetching the row groups after it, up to [`AHEAD_BYTES`] of
//! them (at least one, at most [`MAX_GROUPS_AHEAD`]), each a task of its
//! own on the runtime, so they overlap each other and the decoding, and
//! hands the reader what such a task fetched instead of fetching again.
//! A budget in bytes rather than row groups: what hides a round trip is
//! bytes in flight, and row groups of well-compressed records are small.
//!
//! Invariants: what the reader gets is what it asked for, range for range
//! (a prefetch that failed, or a request that is not in the plan, is read
//! as if there were no read-ahead); the row groups fetched and not yet
//! taken hold at most `AHEAD_BYTES`, or one row group if that is larger
//! (held outside the cold cache's budget, like the reader's own Arrow
//! batches).

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

/// Bytes of row groups fetched ahead of the one the reader asks for (at
/// least one row group): about a round trip's worth of a fast consumer
/// (50 ms at 160 MB/s).
pub(crate) const AHEAD_BYTES: u64 = 8 << 20;
/// Row groups fetched ahead at most (of small ones: tasks, not bytes).
pub(crate) const MAX_GROUPS_AHEAD: usize = 16;

/// The last row group to have fetched while the reader is at `at`: the
/// ones after it within `AHEAD_BYTES` (at least one), at most
/// `MAX_GROUPS_AHEAD`.
fn window_end(plan: &[Vec<Range<u64>>], at: usize) -> usize {
    let (mut to, mut bytes) = (at, 0u64);
    for (g, ranges) in plan.iter().enumerate().skip(at + 1).take(MAX_GROUPS_AHEAD) {
        let b: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        if g > at + 1 && bytes.saturating_add(b) > AHEAD_BYTES {
            break;
        }
        bytes = bytes.saturating_add(b);
        to = g;
    }
    to
}

/// The ranges of one row group, fetched by a task: None if it failed (the
/// reader then fetches them itself, and sees the error if it recurs).
type Fetched = Shared<BoxFuture<'static, Option<Vec<Bytes>>>>;

/// How the read-ahead fetches a row group's ranges (the object's own
/// fetch: through its cache, then the store).
pub(crate) type FetchFn =
    Box<dyn Fn(Vec<Range<u64>>) -> BoxFuture<'static, Option<Vec<Bytes>>> + Send + Sync>;

/// See the module docs.
pub(crate) struct Ahead {
    plan: OnceLock<Vec<Vec<Range<u64>>>>,
    state: Mutex<State>,
    fetch: FetchFn,
}

#[derive(Default)]
struct State {
    /// The first row group of the plan no task was started for.
    next: usize,
    /// The row group after the one the reader last asked for: where its
    /// next request is looked for first (it asks in order, so a file's
    /// requests cost a lookup each, not a scan of the plan each).
    expected: usize,
    /// Tasks started and not yet taken, by row group.
    started: HashMap<usize, Fetched>,
}

impl Ahead {
    /// A read-ahead fetching with `fetch`, idle until it has a plan.
    pub(crate) fn new(fetch: FetchFn) -> Self {
        Self {
            plan: OnceLock::new(),
            state: Mutex::default(),
            fetch,
        }
    }

    /// Sets what the reader will ask for: each row group's ranges, in the
    /// order it reads them. Only the first plan counts.
    pub(crate) fn plan(&self, plan: Vec<Vec<Range<u64>>>) {
        let _ = self.plan.set(plan);
    }

    /// Called as the reader asks for `ranges`: starts fetching the row
    /// groups after them (when a runtime is there to run the tasks), and
    /// returns what a task fetched of `ranges` themselves, if one was
    /// started for them and succeeded.
    pub(crate) async fn take(&self, ranges: &[Range<u64>]) -> Option<Vec<Bytes>> {
        let plan = self.plan.get()?;
        let mine = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let is = |g: &usize| plan.get(*g).is_some_and(|p| p.as_slice() == ranges);
            let at = Some(st.expected)
                .filter(is)
                .or_else(|| (0..plan.len()).find(is))?;
            st.expected = at + 1;
            let mine = st.started.remove(&at);
            // Nothing is fetched for row groups the reader has passed.
            st.started.retain(|&g, _| g > at);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let from = st.next.max(at + 1);
                let to = window_end(plan, at);
                for g in from..=to {
                    let Some(ranges) = plan.get(g) else { break };
                    let task = rt.spawn((self.fetch)(ranges.clone()));
                    let fetched: Fetched =
                        async move { task.await.ok().flatten() }.boxed().shared();
                    st.started.insert(g, fetched);
                }
                st.next = st.next.max(to + 1);
            }
            mine
        };
        match mine {
            Some(f) => f.await,
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A fetch that counts its calls and returns each range's start.
    fn counting() -> (FetchFn, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let f: FetchFn = Box::new(move |ranges: Vec<Range<u64>>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                Some(
                    ranges
                        .iter()
                        .map(|r| Bytes::from(r.start.to_string()))
                        .collect(),
                )
            }
            .boxed()
        });
        (f, calls)
    }

    fn plan(groups: u64) -> Vec<Vec<Range<u64>>> {
        (0..groups)
            .map(|g| vec![g * 100..g * 100 + 10, g * 100 + 10..g * 100 + 50])
            .collect()
    }

    #[tokio::test]
    async fn each_row_group_is_fetched_once_and_ahead_of_the_reader() {
        let (fetch, calls) = counting();
        let ahead = Ahead::new(fetch);
        let plan = plan(5);
        ahead.plan(plan.clone());
        // The first row group: nothing was started for it, but the others
        // are now (all four fit the byte budget).
        assert!(ahead.take(&plan[0]).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        for (g, ranges) in plan.iter().enumerate().skip(1) {
            let got = ahead.take(ranges).await.expect("fetched ahead");
            let want: Vec<Bytes> = ranges
                .iter()
                .map(|r| Bytes::from(r.start.to_string()))
                .collect();
            assert_eq!(got, want, "row group {g}");
        }
        // Row groups 1 to 4, each once.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn requests_outside_the_plan_and_skipped_row_groups_are_left_alone() {
        let (fetch, calls) = counting();
        let ahead = Ahead::new(fetch);
        let plan = plan(6);
        // No plan yet: nothing happens.
        assert!(ahead.take(&plan[0]).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        ahead.plan(plan.clone());
        // Not a row group of the plan (the footer, say).
        let footer = vec![1000..1010, 1010..1020];
        assert!(ahead.take(&footer).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // The reader jumps to row group 3: 4 and 5 are started, 1 and 2
        // never are.
        assert!(ahead.take(&plan[3]).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(ahead.take(&plan[5]).await.is_some());
        assert!(ahead.take(&plan[4]).await.is_none(), "dropped once passed");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_window_is_a_byte_budget_of_at_least_one_row_group() {
        let mib = 1u64 << 20;
        // Row groups of `sizes` MiB, one range each.
        let plan = |sizes: &[u64]| -> Vec<Vec<Range<u64>>> {
            let mut at = 0;
            sizes
                .iter()
                .map(|s| {
                    let r = at..at + s * mib;
                    at = r.end;
                    vec![r]
                })
                .collect()
        };
        // 3 + 3 MiB fit 8 MiB, a third does not.
        assert_eq!(window_end(&plan(&[1, 3, 3, 3, 3]), 0), 2);
        // One row group even when it alone is over the budget.
        assert_eq!(window_end(&plan(&[1, 20, 20]), 0), 1);
        // Small row groups: at most MAX_GROUPS_AHEAD of them.
        let small = vec![0u64; 40];
        assert_eq!(window_end(&plan(&small), 3), 3 + MAX_GROUPS_AHEAD);
        // Nothing after the last.
        assert_eq!(window_end(&plan(&[1, 1]), 1), 1);
    }

    #[test]
    fn without_a_runtime_nothing_is_fetched_ahead() {
        let (fetch, calls) = counting();
        let ahead = Ahead::new(fetch);
        let plan = plan(3);
        ahead.plan(plan.clone());
        let got = futures::executor::block_on(ahead.take(&plan[0]));
        assert!(got.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
