//! Operator views of a partition's segments (`strata segments`).

use crate::broker::Broker;
use crate::cluster::SegmentEntry;
use crate::error::BrokerError;

/// One partition's segments, for operators (`strata segments`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSegments {
    pub topic: String,
    pub partition: i32,
    pub leader: Option<i32>,
    /// Local segments (only on the partition's leader).
    pub hot: Vec<HotSegment>,
    /// The cold-tier manifest.
    pub cold: Vec<SegmentEntry>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HotSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    pub sealed: bool,
    pub path: String,
}

impl Broker {
    /// Hot and cold segments of a topic's partitions (all, or one).
    pub fn segment_listing(
        &self,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<Vec<PartitionSegments>, BrokerError> {
        let t = self.require_topic(topic)?;
        let view = self.view().clone();
        let mut out = Vec::new();
        for info in t
            .partitions
            .iter()
            .filter(|p| partition.is_none_or(|q| q == p.index))
        {
            let hot = self
                .hosted()
                .get(&(topic.to_string(), info.index))
                .map(|p| {
                    p.segments()
                        .into_iter()
                        .map(|s| HotSegment {
                            base_offset: s.base_offset,
                            last_offset: s.next_offset - 1,
                            size_bytes: s.size_bytes,
                            max_timestamp: s.max_timestamp,
                            sealed: s.sealed,
                            path: s.path.display().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let cold = view
                .segments
                .get(&(topic.to_string(), info.index))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            out.push(PartitionSegments {
                topic: topic.to_string(),
                partition: info.index,
                leader: info.leader.map(|l| l.broker),
                hot,
                cold,
            });
        }
        if out.is_empty() {
            return Err(BrokerError::UnknownTopicOrPartition(format!(
                "{topic}-{partition:?}"
            )));
        }
        Ok(out)
    }

    /// The Parquet file metadata (key-value pairs, row groups, rows) of the
    /// cold segment holding `offset`.
    pub async fn inspect_cold_segment(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<serde_json::Value, BrokerError> {
        use parquet::arrow::async_reader::AsyncFileReader;
        let Some(cold) = &self.cold else {
            return Err(BrokerError::InvalidRequest(
                "no cold tier configured".into(),
            ));
        };
        let entry = self.view().cold_segment(topic, partition, offset).ok_or(
            BrokerError::OffsetOutOfRange {
                requested: offset,
                start: -1,
                end: -1,
            },
        )?;
        // The footer only, not the whole file.
        let mut object = cold.ranged(&entry.object_key, entry.bytes);
        let key = &entry.object_key;
        let md = super::off_workers(async move { object.get_metadata(None).await })
            .await
            .map_err(|e| BrokerError::Storage(format!("inspection of {key} failed: {e}")))?
            .map_err(|e| BrokerError::Storage(format!("cannot read {key}: {e}")))?;
        let kv: serde_json::Map<String, serde_json::Value> = md
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .map(|k| {
                        (
                            k.key.clone(),
                            serde_json::Value::from(k.value.clone().unwrap_or_default()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(serde_json::json!({
            "segment": entry,
            "row_groups": md.num_row_groups(),
            "rows": md.file_metadata().num_rows(),
            "created_by": md.file_metadata().created_by(),
            "metadata": kv,
        }))
    }
}
