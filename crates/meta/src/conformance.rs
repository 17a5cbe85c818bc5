//! The conformance suite every [`MetadataStore`] implementation must pass.
//! Each implementation's tests call [`run_all`] on a fresh, empty store.
//! It is test support shipped with the crate (so other crates can run it
//! against their implementations), hence the unwraps.
#![allow(clippy::unwrap_used)]

use crate::types::{Compare, MetadataStore, Op, Txn};
use std::sync::Arc;

/// Runs every check; panics (failing the calling test) on a violation.
pub async fn run_all<S: MetadataStore>(store: &S) {
    put_get_range_delete(store).await;
    compare_and_set_on_revision(store).await;
    create_if_absent(store).await;
    failure_branch_and_prefix_delete(store).await;
}

async fn put_get_range_delete<S: MetadataStore>(s: &S) {
    let r1 = s.put("/t/a/1", "x".into()).await.unwrap();
    let r2 = s.put("/t/a/2", "y".into()).await.unwrap();
    let r3 = s.put("/t/b", "z".into()).await.unwrap();
    assert!(r1 < r2 && r2 < r3, "revisions must grow");
    let kv = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!(&kv.value[..], b"x");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r1);
    let keys: Vec<String> = s
        .range("/t/a/")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, vec!["/t/a/1", "/t/a/2"]);
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
    let ok = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision("/cas".into(), r))
                .then(Op::Put {
                    key: "/cas".into(),
                    value: "2".into(),
                }),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    let stale = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision("/cas".into(), r))
                .then(Op::Put {
                    key: "/cas".into(),
                    value: "3".into(),
                }),
        )
        .await
        .unwrap();
    assert!(!stale.succeeded, "a CAS on a stale revision must fail");
    assert_eq!(&s.get("/cas").await.unwrap().unwrap().value[..], b"2");
    let by_value = s
        .txn(
            Txn::new()
                .when(Compare::Value("/cas".into(), "2".into()))
                .then(Op::Delete { key: "/cas".into() }),
        )
        .await
        .unwrap();
    assert!(by_value.succeeded);
}

async fn create_if_absent<S: MetadataStore>(s: &S) {
    // Many contenders, exactly one winner.
    let mut wins = 0;
    for i in 0..16 {
        let r = s
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision("/leader".into(), 0))
                    .then(Op::Put {
                        key: "/leader".into(),
                        value: format!("{i}").into(),
                    }),
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
                .then(Op::Put {
                    key: "/never".into(),
                    value: "x".into(),
                })
                .or_else(Op::DeletePrefix {
                    prefix: "/p/".into(),
                }),
        )
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert!(s.get("/never").await.unwrap().is_none());
    assert!(s.range("/p/").await.unwrap().is_empty());
    assert!(s.get("/q").await.unwrap().is_some());
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
                    .then(Op::Put {
                        key: "/race".into(),
                        value: format!("{i}").into(),
                    }),
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
    use crate::MemStore;

    #[tokio::test]
    async fn mem_store_conformance() {
        run_all(&MemStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_winner_mem_and_embedded() {
        concurrent_create_if_absent(Arc::new(MemStore::new())).await;
        let d = tempfile::tempdir().unwrap();
        concurrent_create_if_absent(Arc::new(crate::EmbeddedStore::open(d.path()).unwrap())).await;
    }
}
