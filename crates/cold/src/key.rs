//! Object keys (Hive-style, so engines prune by topic and partition).

/// `<prefix>/topics/<topic>/partition=<p>/<base:020>-<last:020>-e<epoch>.parquet`;
/// an empty prefix yields a key starting at `topics/`.
pub fn object_key(
    prefix: &str,
    topic: &str,
    partition: i32,
    base: i64,
    last: i64,
    epoch: i32,
) -> String {
    let prefix = prefix.trim_matches('/');
    let head = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!("{head}topics/{topic}/partition={partition}/{base:020}-{last:020}-e{epoch}.parquet")
}
