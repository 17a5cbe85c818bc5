//! In-memory store for unit tests.

use crate::state::State;
use crate::types::{KeyValue, MetaError, MetadataStore, Txn, TxnResponse};
use async_trait::async_trait;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemStore {
    state: Mutex<State>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-applied
        // (apply does no fallible work), so recover from poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl MetadataStore for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.lock().get(key))
    }
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        Ok(self.lock().range(prefix))
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError> {
        Ok(self.lock().txn(&txn))
    }
}
