//! The state machine the local stores share: a sorted map plus the revision
//! counter. Applying operations is deterministic, so the embedded store can
//! replay its log through the same code.

use crate::types::{Compare, KeyValue, Op, WatchEvent};
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

    pub fn keys_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
    }

    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.keys_with_prefix(prefix).cloned().collect()
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

    /// Applies `ops` at the next revision and returns the resulting events.
    /// An empty `ops` changes nothing and keeps the revision.
    pub fn apply(&mut self, ops: &[Op]) -> Vec<WatchEvent> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.revision += 1;
        let rev = self.revision;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let entry = self.kvs.entry(key.clone()).or_insert_with(|| KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 0,
                        lease: 0,
                    });
                    entry.value = value.clone();
                    entry.mod_revision = rev;
                    entry.version += 1;
                    entry.lease = lease.unwrap_or(0);
                    events.push(WatchEvent::Put(entry.clone()));
                }
                Op::Delete { key } => {
                    if self.kvs.remove(key).is_some() {
                        events.push(WatchEvent::Delete {
                            key: key.clone(),
                            mod_revision: rev,
                        });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<String> = self
                        .keys_with_prefix(prefix)
                        .map(|kv| kv.key.clone())
                        .collect();
                    for key in keys {
                        self.kvs.remove(&key);
                        events.push(WatchEvent::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
            }
        }
        events
    }
}
