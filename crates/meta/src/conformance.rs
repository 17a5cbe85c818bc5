//! The conformance suite every [`MetadataStore`] implementation must pass.
//! Each implementation's tests call [`run_all`] on a fresh, empty store.
//! It is test support shipped with the crate (so other crates can run it
//! against their implementations), hence the unwraps and panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::types::{Compare, MetaError, MetadataStore, Op, Txn, WatchEvent, WatchStream};
use std::sync::Arc;
use std::time::Duration;

/// Runs every check; panics (failing the calling test) on a violation.
pub async fn run_all<S: MetadataStore>(store: &S) {
    put_get_range_delete(store).await;
    compare_and_set_on_revision(store).await;
    create_if_absent(store).await;
    failure_branch_and_prefix_delete(store).await;
    transactions_are_bounded(store).await;
    transactions_are_bounded_in_bytes(store).await;
    a_large_range_is_read_whole(store).await;
    watch_delivers_changes_in_order(store).await;
    watch_replays_from_a_past_revision(store).await;
    compaction_discards_history_not_state(store).await;
    lease_keep_alive_and_revoke(store).await;
    lease_expiry_deletes_bound_keys(store).await;
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10 s")
        .expect("watch stream open")
        .expect("watch event, not an error")
}

async fn put_get_range_delete<S: MetadataStore>(s: &S) {
    let r1 = s.put("/t/a/1", "x".into()).await.unwrap();
    let r2 = s.put("/t/a/2", "y".into()).await.unwrap();
    let r3 = s.put("/t/b", "z".into()).await.unwrap();
    assert!(r1 < r2 && r2 < r3, "revisions must grow");
    let kv = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!(&kv.value[..], b"x");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (r1, r1, 0));
    let range = s.range("/t/a/").await.unwrap();
    let keys: Vec<String> = range.kvs.into_iter().map(|k| k.key).collect();
    assert_eq!(keys, vec!["/t/a/1", "/t/a/2"]);
    assert!(
        range.revision >= r3,
        "range reports the revision it read at"
    );
    let r4 = s.put("/t/a/1", "x2".into()).await.unwrap();
    let kv = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r4, 2)
    );
    s.delete("/t/a/1").await.unwrap();
    assert!(s.get("/t/a/1").await.unwrap().is_none());
}

async fn compare_and_set_on_revision<S: MetadataStore>(s: &S) {
    let r = s.put("/cas", "1".into()).await.unwrap();
    let cas = |rev: i64, v: &'static str| {
        Txn::new()
            .when(Compare::ModRevision("/cas".into(), rev))
            .then(Op::put("/cas", v))
    };
    assert!(s.txn(cas(r, "2")).await.unwrap().succeeded);
    assert!(
        !s.txn(cas(r, "3")).await.unwrap().succeeded,
        "a CAS on a stale revision must fail"
    );
    assert_eq!(&s.get("/cas").await.unwrap().unwrap().value[..], b"2");
    let by_value = s
        .txn(
            Txn::new()
                .when(Compare::Value("/cas".into(), "2".into()))
                .then(Op::delete("/cas")),
        )
        .await
        .unwrap();
    assert!(by_value.succeeded);
    let absent_value = s
        .txn(
            Txn::new()
                .when(Compare::Value("/cas".into(), "2".into()))
                .then(Op::put("/never", "x")),
        )
        .await
        .unwrap();
    assert!(
        !absent_value.succeeded,
        "a value compare on an absent key fails"
    );
}

async fn create_if_absent<S: MetadataStore>(s: &S) {
    let mut wins = 0;
    for i in 0..16 {
        let r = s
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision("/leader".into(), 0))
                    .then(Op::put("/leader", format!("{i}"))),
            )
            .await
            .unwrap();
        if r.succeeded {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(&s.get("/leader").await.unwrap().unwrap().value[..], b"0");
}

async fn failure_branch_and_prefix_delete<S: MetadataStore>(s: &S) {
    s.put("/p/1", "a".into()).await.unwrap();
    s.put("/p/2", "b".into()).await.unwrap();
    s.put("/q", "c".into()).await.unwrap();
    let r = s
        .txn(
            Txn::new()
                .when(Compare::CreateRevision("/missing".into(), 12345))
                .then(Op::put("/never", "x"))
                .or_else(Op::delete_prefix("/p/")),
        )
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert!(s.get("/never").await.unwrap().is_none());
    assert!(s.range("/p/").await.unwrap().kvs.is_empty());
    assert!(s.get("/q").await.unwrap().is_some());
}

/// A transaction of `MAX_TXN_OPS` operations applies; one more is refused
/// whole; `apply_in_chunks` writes any number.
async fn transactions_are_bounded<S: MetadataStore>(s: &S) {
    use crate::types::{apply_in_chunks, MAX_TXN_OPS};
    let puts = |n: usize, tag: &str| -> Vec<Op> {
        (0..n)
            .map(|i| Op::put(format!("/bounded/{tag}/{i:04}"), "v"))
            .collect()
    };
    let most = Txn {
        success: puts(MAX_TXN_OPS, "most"),
        ..Txn::default()
    };
    assert!(s.txn(most).await.unwrap().succeeded);
    assert_eq!(
        s.range("/bounded/most/").await.unwrap().kvs.len(),
        MAX_TXN_OPS
    );
    let over = Txn {
        success: puts(MAX_TXN_OPS + 1, "over"),
        ..Txn::default()
    };
    assert!(matches!(
        s.txn(over).await,
        Err(MetaError::TooManyOps { .. })
    ));
    let compares = (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| {
        t.when(Compare::CreateRevision(format!("/bounded/c/{i}"), 0))
    });
    assert!(matches!(
        s.txn(compares).await,
        Err(MetaError::TooManyOps { .. })
    ));
    assert!(s.range("/bounded/over/").await.unwrap().kvs.is_empty());
    let n = 3 * MAX_TXN_OPS + 5;
    apply_in_chunks(s, puts(n, "chunked")).await.unwrap();
    assert_eq!(s.range("/bounded/chunked/").await.unwrap().kvs.len(), n);
    s.txn(Txn::new().then(Op::delete_prefix("/bounded/")))
        .await
        .unwrap();
}

/// A transaction of `MAX_TXN_BYTES` applies (against etcd: the bound is
/// inside etcd's own request limit); one byte more is refused whole, on
/// either branch or in a compare; `apply_in_chunks` splits by bytes.
async fn transactions_are_bounded_in_bytes<S: MetadataStore>(s: &S) {
    use crate::types::{apply_in_chunks, MAX_TXN_BYTES, OP_OVERHEAD};
    let key = "/bytes/most";
    let value = |extra: usize| vec![b'b'; MAX_TXN_BYTES - OP_OVERHEAD - key.len() + extra];
    let most = Txn::new().then(Op::put(key, value(0)));
    assert_eq!(most.bytes(), MAX_TXN_BYTES);
    assert!(s.txn(most).await.unwrap().succeeded);
    assert_eq!(
        s.get(key).await.unwrap().unwrap().value.len(),
        value(0).len()
    );
    let over = Txn::new().then(Op::put(key, value(1)));
    assert!(matches!(
        s.txn(over).await,
        Err(MetaError::TooLarge { bytes }) if bytes == MAX_TXN_BYTES + 1
    ));
    let small = || Op::put("/bytes/small", "s");
    let over_on_failure = Txn::new().then(small()).or_else(Op::put(key, value(0)));
    assert!(matches!(
        s.txn(over_on_failure).await,
        Err(MetaError::TooLarge { .. })
    ));
    let over_in_compare = Txn::new()
        .when(Compare::Value(key.into(), value(0).into()))
        .then(small());
    assert!(matches!(
        s.txn(over_in_compare).await,
        Err(MetaError::TooLarge { .. })
    ));
    assert!(s.get("/bytes/small").await.unwrap().is_none());
    let quarter = vec![b'q'; MAX_TXN_BYTES / 4];
    let ops: Vec<Op> = (0..9)
        .map(|i| Op::put(format!("/bytes/chunked/{i}"), quarter.clone()))
        .collect();
    apply_in_chunks(s, ops).await.unwrap();
    assert_eq!(s.range("/bytes/chunked/").await.unwrap().kvs.len(), 9);
    let too_big = vec![
        Op::put("/bytes/alone/a", "a"),
        Op::put("/bytes/alone/b", value(1)),
    ];
    assert!(matches!(
        apply_in_chunks(s, too_big).await,
        Err(MetaError::TooLarge { .. })
    ));
    s.txn(Txn::new().then(Op::delete_prefix("/bytes/")))
        .await
        .unwrap();
}

/// A range of more than 4 MiB (gRPC's default cap on a response) comes
/// back whole: a broker reads its whole view so.
async fn a_large_range_is_read_whole<S: MetadataStore>(s: &S) {
    let value = vec![b'v'; 512 << 10];
    for i in 0..12 {
        let put = Op::put(format!("/large/{i:02}"), value.clone());
        assert!(s.txn(Txn::new().then(put)).await.unwrap().succeeded);
    }
    let r = s.range("/large/").await.unwrap();
    assert_eq!(r.kvs.len(), 12);
    assert!(r.kvs.iter().all(|kv| kv.value.len() == value.len()));
    s.txn(Txn::new().then(Op::delete_prefix("/large/")))
        .await
        .unwrap();
}

async fn watch_delivers_changes_in_order<S: MetadataStore>(s: &S) {
    let mut w = s.watch_prefix("/w/", 0).await.unwrap();
    let r1 = s.put("/w/a", "1".into()).await.unwrap();
    s.put("/outside", "x".into()).await.unwrap();
    let r2 = s.put("/w/b", "2".into()).await.unwrap();
    let r3 = s.delete("/w/a").await.unwrap();
    let r4 = s
        .txn(
            Txn::new()
                .then(Op::put("/w/c", "3"))
                .then(Op::delete("/w/b")),
        )
        .await
        .unwrap()
        .revision;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_event(&mut w).await);
    }
    let summary: Vec<(String, String, i64)> = got
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => ("put".into(), kv.key.clone(), kv.mod_revision),
            WatchEvent::Delete { key, mod_revision } => ("del".into(), key.clone(), *mod_revision),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("put".into(), "/w/a".into(), r1),
            ("put".into(), "/w/b".into(), r2),
            ("del".into(), "/w/a".into(), r3),
            ("put".into(), "/w/c".into(), r4),
            ("del".into(), "/w/b".into(), r4),
        ]
    );
}

async fn watch_replays_from_a_past_revision<S: MetadataStore>(s: &S) {
    let start = s.put("/h/1", "a".into()).await.unwrap();
    s.put("/h/2", "b".into()).await.unwrap();
    // "range, then watch from revision + 1" sees nothing twice and misses nothing.
    let snapshot = s.range("/h/").await.unwrap();
    let mut w = s.watch_prefix("/h/", start).await.unwrap();
    let e1 = next_event(&mut w).await;
    let e2 = next_event(&mut w).await;
    assert_eq!((e1.key(), e2.key()), ("/h/1", "/h/2"));
    let mut after = s.watch_prefix("/h/", snapshot.revision + 1).await.unwrap();
    s.put("/h/3", "c".into()).await.unwrap();
    assert_eq!(next_event(&mut after).await.key(), "/h/3");
}

/// Whether a watch of `prefix` from `from` fails as compacted (at once, or
/// as its stream's first item, as etcd reports it).
async fn watch_is_compacted<S: MetadataStore>(s: &S, prefix: &str, from: i64) -> bool {
    match s.watch_prefix(prefix, from).await {
        Err(MetaError::Compacted { .. }) => true,
        Err(e) => panic!("watch from {from}: {e}"),
        Ok(mut w) => matches!(
            tokio::time::timeout(Duration::from_secs(5), w.next()).await,
            Ok(Some(Err(MetaError::Compacted { .. })))
        ),
    }
}

/// Compaction discards the history before a revision, never the state;
/// compacting again or lower is a no-op, past the current revision an error.
async fn compaction_discards_history_not_state<S: MetadataStore>(s: &S) {
    let first = s.put("/cp/a", "1".into()).await.unwrap();
    let second = s.put("/cp/a", "2".into()).await.unwrap();
    let third = s.put("/cp/b", "3".into()).await.unwrap();
    assert!(!watch_is_compacted(s, "/cp/", first).await);
    s.compact(second).await.unwrap();
    assert!(watch_is_compacted(s, "/cp/", first).await);
    let mut w = s.watch_prefix("/cp/", second).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), second);
    assert_eq!(next_event(&mut w).await.revision(), third);
    assert_eq!(s.get("/cp/a").await.unwrap().unwrap().value, "2");
    assert_eq!(s.range("/cp/").await.unwrap().kvs.len(), 2);
    s.compact(second).await.unwrap();
    s.compact(first).await.unwrap();
    let current = s.range("/cp/").await.unwrap().revision;
    assert!(matches!(
        s.compact(current + 10).await,
        Err(MetaError::FutureRevision(_))
    ));
    s.delete_prefix("/cp/").await.unwrap();
}

async fn lease_keep_alive_and_revoke<S: MetadataStore>(s: &S) {
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    s.txn(Txn::new().then(Op::put_with_lease("/l/owned", "me", lease)))
        .await
        .unwrap();
    assert_eq!(s.get("/l/owned").await.unwrap().unwrap().lease, lease);
    s.keep_alive(lease).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert!(
        s.get("/l/owned").await.unwrap().is_none(),
        "revoking deletes bound keys"
    );
    assert!(
        matches!(s.keep_alive(lease).await, Err(MetaError::LeaseNotFound(_))),
        "keep-alive of a revoked lease must fail: {:?}",
        s.keep_alive(lease).await
    );
    let bogus = s
        .txn(Txn::new().then(Op::put_with_lease("/l/x", "y", 987_654_321)))
        .await;
    assert!(bogus.is_err(), "a put with an unknown lease must fail");
}

async fn lease_expiry_deletes_bound_keys<S: MetadataStore>(s: &S) {
    let kept = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    let lapsed = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.txn(
        Txn::new()
            .then(Op::put_with_lease("/e/kept", "1", kept))
            .then(Op::put_with_lease("/e/lapsed", "2", lapsed)),
    )
    .await
    .unwrap();
    let mut w = s.watch_prefix("/e/", 0).await.unwrap();
    // Renew one lease, let the other lapse; bounded wait for the deletion.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut deleted = None;
    while deleted.is_none() && tokio::time::Instant::now() < deadline {
        s.keep_alive(kept).await.unwrap();
        if let Ok(Some(Ok(WatchEvent::Delete { key, .. }))) =
            tokio::time::timeout(Duration::from_millis(300), w.next()).await
        {
            deleted = Some(key);
        }
    }
    assert_eq!(deleted.as_deref(), Some("/e/lapsed"));
    assert!(s.get("/e/lapsed").await.unwrap().is_none());
    assert!(
        s.get("/e/kept").await.unwrap().is_some(),
        "a renewed lease keeps its keys"
    );
    assert!(matches!(
        s.keep_alive(lapsed).await,
        Err(MetaError::LeaseNotFound(_))
    ));
    s.revoke_lease(kept).await.unwrap();
}

/// Concurrent create-if-absent from many tasks: exactly one winner.
pub async fn concurrent_create_if_absent<S: MetadataStore>(s: Arc<S>) {
    let mut handles = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.txn(
                Txn::new()
                    .when(Compare::CreateRevision("/race".into(), 0))
                    .then(Op::put("/race", format!("{i}"))),
            )
            .await
            .map(|r| r.succeeded)
        }));
    }
    let mut wins = 0;
    for h in handles {
        if h.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedStore, MemStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_winner_mem_and_embedded() {
        concurrent_create_if_absent(Arc::new(MemStore::new())).await;
        let d = tempfile::tempdir().unwrap();
        concurrent_create_if_absent(Arc::new(EmbeddedStore::open(d.path()).unwrap())).await;
    }
}
