//! The in-memory state machine both local stores share: a sorted map plus
//! the revision counter. Applying a transaction is deterministic, so the
//! embedded store can replay its log through the same code.

use crate::types::{Compare, KeyValue, Op, Txn, TxnResponse};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    pub revision: i64,
    pub kvs: BTreeMap<String, KeyValue>,
}

impl State {
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).cloned()
    }

    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn check(&self, compares: &[Compare]) -> bool {
        compares.iter().all(|c| match c {
            Compare::ModRevision(k, r) => self.kvs.get(k).map_or(0, |kv| kv.mod_revision) == *r,
            Compare::CreateRevision(k, r) => {
                self.kvs.get(k).map_or(0, |kv| kv.create_revision) == *r
            }
            Compare::Value(k, v) => self.kvs.get(k).is_some_and(|kv| kv.value == *v),
        })
    }

    /// Which branch `txn` takes here, and whether it mutates anything.
    pub fn branch<'a>(&self, txn: &'a Txn) -> (bool, &'a [Op]) {
        let ok = self.check(&txn.compares);
        (ok, if ok { &txn.success } else { &txn.failure })
    }

    /// Applies mutating ops at the next revision. Ops that change nothing
    /// (deleting an absent key) still consume the revision, as in etcd when
    /// the transaction has any write.
    pub fn apply(&mut self, ops: &[Op]) -> i64 {
        if ops.is_empty() {
            return self.revision;
        }
        self.revision += 1;
        let rev = self.revision;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let entry = self.kvs.entry(key.clone()).or_insert_with(|| KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 0,
                    });
                    entry.value = value.clone();
                    entry.mod_revision = rev;
                    entry.version += 1;
                }
                Op::Delete { key } => {
                    self.kvs.remove(key);
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<String> = self
                        .kvs
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        self.kvs.remove(&k);
                    }
                }
            }
        }
        rev
    }

    pub fn txn(&mut self, txn: &Txn) -> TxnResponse {
        let (succeeded, ops) = self.branch(txn);
        let ops = ops.to_vec();
        let revision = self.apply(&ops);
        TxnResponse {
            succeeded,
            revision,
        }
    }
}
