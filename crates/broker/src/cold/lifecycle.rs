//! The cold tier's lifecycle: retention over both tiers, DeleteRecords,
//! topic deletion and garbage collection of unreferenced objects.

use crate::broker::Broker;
use crate::cluster::SegmentEntry;
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topics::to_json;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_meta::{Compare, Op, Txn, MAX_TXN_OPS};

impl Broker {
    /// Applies `retention.ms` / `retention.bytes` to the whole log: the
    /// oldest cold segments go first, each by removing its manifest entry
    /// (guarded by the leader fence) and then its object. Returns how many.
    pub(crate) async fn enforce_cold_retention(&self, p: &Partition, now_ms: i64) -> usize {
        let Some(cold) = &self.cold else { return 0 };
        let cfg = p.config();
        let (retention_ms, retention_bytes) = cfg.whole_log_retention();
        let entries: Vec<SegmentEntry> = self
            .view()
            .segments
            .get(&(p.topic.clone(), p.index))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut total: i64 =
            entries.iter().map(|e| e.bytes as i64).sum::<i64>() + p.size_bytes() as i64;
        let mut removed = 0;
        for e in entries {
            let expired = retention_ms >= 0 && now_ms - e.max_timestamp > retention_ms;
            let too_big = retention_bytes >= 0 && total - e.bytes as i64 >= retention_bytes;
            if !(expired || too_big) {
                break;
            }
            let txn = Txn::new()
                .when(Compare::CreateRevision(
                    self.keys.partition_leader(&p.topic, p.index),
                    p.fencing_revision(),
                ))
                .then(Op::delete(self.keys.segment(
                    &p.topic,
                    p.index,
                    e.base_offset,
                )));
            match self.meta.txn(txn).await {
                Ok(r) if r.succeeded => {}
                Ok(_) => break, // no longer the leader
                Err(err) => {
                    tracing::warn!(partition = %p.name(), error = %err, "cannot apply cold retention");
                    break;
                }
            }
            if let Err(err) = cold
                .store
                .delete(&ObjectPath::from(e.object_key.as_str()))
                .await
            {
                tracing::warn!(key = %e.object_key, error = %err, "cannot delete an expired cold segment; the GC will");
            }
            cold.forget(&e.object_key);
            total -= e.bytes as i64;
            removed += 1;
            tracing::info!(partition = %p.name(), key = %e.object_key, "retention deleted cold segment");
        }
        if removed > 0 {
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
        removed
    }

    /// Deletes the objects of a deleted topic's manifest entries (best
    /// effort: the manifest entries are already gone; leftovers are orphans
    /// for the GC).
    pub(crate) async fn delete_topic_objects(&self, keys: Vec<String>) {
        let Some(cold) = &self.cold else { return };
        for key in keys {
            if let Err(e) = cold.store.delete(&ObjectPath::from(key.as_str())).await {
                tracing::warn!(key, error = %e, "cannot delete an object of a deleted topic");
            }
            cold.forget(&key);
        }
    }

    /// Deletes orphaned objects older than `grace_ms`: under each partition
    /// this broker leads, objects the manifest does not reference (uploads
    /// whose commit failed or never happened); and, on the live broker with
    /// the lowest id, objects of topics that no longer exist. Returns how
    /// many objects were deleted.
    pub async fn collect_garbage(&self, grace_ms: i64) -> usize {
        use futures::TryStreamExt;
        let Some(cold) = &self.cold else { return 0 };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let root = if cold.prefix.is_empty() {
            "topics".to_string()
        } else {
            format!("{}/topics", cold.prefix)
        };
        let listed: Vec<object_store::ObjectMeta> = match cold
            .store
            .list(Some(&ObjectPath::from(root.as_str())))
            .try_collect()
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cold tier for garbage collection");
                return 0;
            }
        };
        let (referenced, topics, lowest) = {
            let v = self.view();
            let referenced: std::collections::HashSet<String> = v
                .segments
                .values()
                .flat_map(|m| m.values().map(|e| e.object_key.clone()))
                .collect();
            let topics: std::collections::HashSet<String> = v.topics.keys().cloned().collect();
            (referenced, topics, v.brokers.keys().next().copied())
        };
        let hosted: std::collections::HashSet<(String, i32)> = self
            .hosted_partitions()
            .iter()
            .map(|p| (p.topic.clone(), p.index))
            .collect();
        let sweeps_deleted_topics = lowest == Some(self.identity.id);
        let mut deleted = 0;
        for meta in listed {
            let key = meta.location.to_string();
            if referenced.contains(&key)
                || now_ms - meta.last_modified.timestamp_millis() < grace_ms
            {
                continue;
            }
            // <root>/<topic>/partition=<p>/<file>
            let rest = key.strip_prefix(&format!("{root}/")).unwrap_or(&key);
            let mut parts = rest.split('/');
            let topic = parts.next().unwrap_or_default().to_string();
            let partition = parts
                .next()
                .and_then(|d| d.strip_prefix("partition="))
                .and_then(|p| p.parse::<i32>().ok());
            let mine = match partition {
                Some(p) if topics.contains(&topic) => hosted.contains(&(topic.clone(), p)),
                _ => sweeps_deleted_topics && !topics.contains(&topic),
            };
            if !mine {
                continue;
            }
            match cold.store.delete(&meta.location).await {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(key, "garbage-collected an unreferenced cold object");
                }
                Err(e) => tracing::warn!(key, error = %e, "cannot delete an unreferenced object"),
            }
        }
        deleted
    }

    /// DeleteRecords: makes `offset` (-1: the high watermark) the partition's
    /// log start offset, persisted in the partition state by a CAS that also
    /// requires this broker's leader key; then drops cold and local segments
    /// wholly below it. Returns the new low watermark.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        let p = self.partition(topic, partition)?;
        let hw = p.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(BrokerError::OffsetOutOfRange {
                requested: offset,
                start: self.earliest_offset(&p),
                end: hw,
            });
        }
        if target <= self.earliest_offset(&p) {
            return Ok(self.earliest_offset(&p));
        }
        // A transaction deletes at most `MAX_TXN_OPS - 1` cold segments
        // beside the state: many go in steps, the log start moving up to
        // each step's last deleted segment (bounded: every step deletes).
        loop {
            let reached = self
                .delete_records_step(&p, topic, partition, target)
                .await?;
            p.delete_below(reached, self.clock.now_ms())?;
            if reached >= target {
                return Ok(self.earliest_offset(&p));
            }
        }
    }

    /// One step of [`Self::delete_records`]: the log start moved to `target`,
    /// or, with more cold segments below it than a transaction deletes, to
    /// the end of the last one it deleted. Returns where it got to.
    async fn delete_records_step(
        &self,
        p: &Partition,
        topic: &str,
        partition: i32,
        target: i64,
    ) -> Result<i64, BrokerError> {
        let state_key = self.keys.partition_state(topic, partition);
        let kv =
            self.meta.get(&state_key).await?.ok_or_else(|| {
                BrokerError::UnknownTopicOrPartition(format!("{topic}-{partition}"))
            })?;
        let mut doomed: Vec<SegmentEntry> = self
            .view()
            .segments
            .get(&(topic.to_string(), partition))
            .map(|m| {
                m.values()
                    .filter(|e| e.last_offset < target)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut reached = target;
        if doomed.len() > MAX_TXN_OPS - 1 {
            doomed.truncate(MAX_TXN_OPS - 1);
            reached = doomed.last().map_or(target, |e| e.last_offset + 1);
        }
        let mut state: crate::topics::PartitionStateRecord = crate::topics::from_json(&kv.value)?;
        state.log_start_offset = state.log_start_offset.max(reached);
        let mut txn = Txn::new()
            .when(Compare::ModRevision(state_key.clone(), kv.mod_revision))
            .when(Compare::CreateRevision(
                self.keys.partition_leader(topic, partition),
                p.fencing_revision(),
            ))
            .then(Op::put(state_key, to_json(&state)?));
        for e in &doomed {
            txn = txn.then(Op::delete(self.keys.segment(
                topic,
                partition,
                e.base_offset,
            )));
        }
        if !self.meta.txn(txn).await?.succeeded {
            return Err(BrokerError::NotLeader(format!(
                "{topic}-{partition}: state changed or leadership moved; retry"
            )));
        }
        self.sync_view().await?;
        if let Some(cold) = &self.cold {
            for e in doomed {
                if let Err(err) = cold
                    .store
                    .delete(&ObjectPath::from(e.object_key.as_str()))
                    .await
                {
                    tracing::warn!(key = %e.object_key, error = %err, "cannot delete a deleted-records object; the GC will");
                }
                cold.forget(&e.object_key);
            }
        }
        Ok(reached)
    }
}
