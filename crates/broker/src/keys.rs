//! The DESIGN §5 key layout under `/strata/<cluster>/`.
//!
//! Topic names cannot contain `/` (they are validated), but group ids are
//! arbitrary strings, so group ids are escaped (`%` → `%25`, `/` → `%2F`).

/// The longest group or transactional id, in bytes: Kafka's protocol
/// strings are at most `i16::MAX` bytes (a Java client cannot send a
/// longer one, and Kafka's broker refuses one as malformed). The ids name
/// keys in the metadata store, whose transactions are bounded
/// (`strata_meta::MAX_TXN_BYTES`), so a longer one is refused before it
/// reaches a key.
pub const MAX_ID_BYTES: usize = i16::MAX as usize;

/// Whether `id` (a group or transactional id) is within [`MAX_ID_BYTES`].
pub fn id_fits(id: &str) -> bool {
    id.len() <= MAX_ID_BYTES
}

/// What a key under the cluster root names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    Broker(i32),
    Topic(String),
    PartitionState(String, i32),
    PartitionLeader(String, i32),
    Segment(String, i32, i64),
    Coordinator(String),
    TxnCoordinator(String),
    TxnState(String),
    Other,
}

#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

pub fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

pub fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            root: format!("/strata/{}/", escape(cluster)),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    pub fn broker(&self, id: i32) -> String {
        format!("{}brokers/{id}", self.root)
    }
    pub fn group_coordinator(&self, group: &str) -> String {
        format!("{}coordinator", self.group_prefix(group))
    }

    /// Classifies a key under the root.
    pub fn parse(&self, key: &str) -> ParsedKey {
        let Some(rest) = key.strip_prefix(&self.root) else {
            return ParsedKey::Other;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["brokers", id] => id.parse().map_or(ParsedKey::Other, ParsedKey::Broker),
            ["topics", name] => ParsedKey::Topic((*name).to_string()),
            ["partitions", t, p, "state"] => p.parse().map_or(ParsedKey::Other, |p| {
                ParsedKey::PartitionState((*t).to_string(), p)
            }),
            ["partitions", t, p, "leader"] => p.parse().map_or(ParsedKey::Other, |p| {
                ParsedKey::PartitionLeader((*t).to_string(), p)
            }),
            ["partitions", t, p, "segments", base] => match (p.parse(), base.parse()) {
                (Ok(p), Ok(b)) => ParsedKey::Segment((*t).to_string(), p, b),
                _ => ParsedKey::Other,
            },
            ["groups", g, "coordinator"] => ParsedKey::Coordinator(unescape(g)),
            ["transactions", t, "coordinator"] => ParsedKey::TxnCoordinator(unescape(t)),
            ["transactions", t, "state"] => ParsedKey::TxnState(unescape(t)),
            _ => ParsedKey::Other,
        }
    }

    pub fn topics_prefix(&self) -> String {
        format!("{}topics/", self.root)
    }
    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }
    pub fn partitions_prefix(&self, topic: &str) -> String {
        format!("{}partitions/{topic}/", self.root)
    }
    pub fn partition_state(&self, topic: &str, p: i32) -> String {
        format!("{}partitions/{topic}/{p}/state", self.root)
    }
    pub fn partition_leader(&self, topic: &str, p: i32) -> String {
        format!("{}partitions/{topic}/{p}/leader", self.root)
    }
    pub fn segment(&self, topic: &str, p: i32, base: i64) -> String {
        format!("{}partitions/{topic}/{p}/segments/{base:020}", self.root)
    }
    pub fn groups_prefix(&self) -> String {
        format!("{}groups/", self.root)
    }
    pub fn group_prefix(&self, group: &str) -> String {
        format!("{}groups/{}/", self.root, escape(group))
    }
    pub fn group_offsets_prefix(&self, group: &str) -> String {
        format!("{}offsets/", self.group_prefix(group))
    }
    pub fn group_offset(&self, group: &str, topic: &str, p: i32) -> String {
        format!("{}{topic}/{p}", self.group_offsets_prefix(group))
    }
    /// `transactions/<id>/`: one transactional id's keys.
    pub fn txn_prefix(&self, id: &str) -> String {
        format!("{}transactions/{}/", self.root, escape(id))
    }
    pub fn txn_coordinator(&self, id: &str) -> String {
        format!("{}coordinator", self.txn_prefix(id))
    }
    pub fn txn_state(&self, id: &str) -> String {
        format!("{}state", self.txn_prefix(id))
    }
    /// `groups/<g>/txn-offsets/<producer id>/`: offsets a transaction will
    /// commit for the group when it commits.
    pub fn group_txn_offsets_prefix(&self, group: &str, producer_id: i64) -> String {
        format!("{}txn-offsets/{producer_id}/", self.group_prefix(group))
    }
    pub fn group_txn_offset(&self, group: &str, producer_id: i64, topic: &str, p: i32) -> String {
        format!(
            "{}{topic}/{p}",
            self.group_txn_offsets_prefix(group, producer_id)
        )
    }
    /// Parses `groups/<g>/txn-offsets/<pid>/<topic>/<p>` into its parts.
    pub fn parse_group_txn_offset(&self, key: &str) -> Option<(String, i64, String, i32)> {
        let rest = key.strip_prefix(&self.groups_prefix())?;
        let (g, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix("txn-offsets/")?;
        let (pid, rest) = rest.split_once('/')?;
        let (t, p) = rest.rsplit_once('/')?;
        Some((
            unescape(g),
            pid.parse().ok()?,
            t.to_string(),
            p.parse().ok()?,
        ))
    }

    /// Parses `groups/<g>/offsets/<topic>/<p>` back into its parts.
    pub fn parse_group_offset(&self, key: &str) -> Option<(String, String, i32)> {
        let rest = key.strip_prefix(&self.groups_prefix())?;
        let (g, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix("offsets/")?;
        let (t, p) = rest.rsplit_once('/')?;
        Some((unescape(g), t.to_string(), p.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let k = Keys::new("c");
        assert_eq!(k.parse(&k.broker(3)), ParsedKey::Broker(3));
        assert_eq!(k.parse(&k.topic("a.b")), ParsedKey::Topic("a.b".into()));
        assert_eq!(
            k.parse(&k.partition_state("t", 2)),
            ParsedKey::PartitionState("t".into(), 2)
        );
        assert_eq!(
            k.parse(&k.partition_leader("t", 0)),
            ParsedKey::PartitionLeader("t".into(), 0)
        );
        assert_eq!(
            k.parse(&k.txn_coordinator("t/x")),
            ParsedKey::TxnCoordinator("t/x".into())
        );
        assert_eq!(
            k.parse(&k.txn_state("t%y")),
            ParsedKey::TxnState("t%y".into())
        );
        assert_eq!(
            k.parse_group_txn_offset(&k.group_txn_offset("g/1", 42, "orders", 3)),
            Some(("g/1".into(), 42, "orders".into(), 3))
        );
        assert_eq!(
            k.parse_group_offset(&k.group_txn_offset("g", 1, "t", 0)),
            None
        );
        assert_eq!(
            k.parse(&k.group_coordinator("g/x")),
            ParsedKey::Coordinator("g/x".into())
        );
        assert_eq!(k.parse(&k.group_offset("g", "t", 1)), ParsedKey::Other);
        assert_eq!(
            k.parse(&k.segment("t", 1, 42)),
            ParsedKey::Segment("t".into(), 1, 42)
        );
        assert_eq!(k.parse("/other/brokers/1"), ParsedKey::Other);
    }

    #[test]
    fn group_offset_keys_round_trip_with_escaping() {
        let k = Keys::new("dev");
        let key = k.group_offset("a/b%c", "orders", 7);
        assert_eq!(key, "/strata/dev/groups/a%2Fb%25c/offsets/orders/7");
        assert_eq!(
            k.parse_group_offset(&key),
            Some(("a/b%c".to_string(), "orders".to_string(), 7))
        );
    }
}
