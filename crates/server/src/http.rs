//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use strata_broker::metrics::{Metrics, RequestTimes, TimeSnapshot};
use strata_broker::partition::Partition;
use strata_broker::Broker;

pub struct HttpState {
    pub broker: Arc<Broker>,
    /// Set once the Kafka listener accepts connections; cleared at shutdown.
    pub ready: AtomicBool,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/segments", get(segments))
        .route("/v1/segments/inspect", get(inspect))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[derive(serde::Deserialize)]
struct SegmentQuery {
    topic: String,
    partition: Option<i32>,
    offset: Option<i64>,
}

fn error(status: StatusCode, msg: String) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Hot and cold segments of a topic (`strata segments list`).
async fn segments(
    State(s): State<Arc<HttpState>>,
    axum::extract::Query(q): axum::extract::Query<SegmentQuery>,
) -> axum::response::Response {
    match s.broker.segment_listing(&q.topic, q.partition) {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// The cold segment holding an offset, with its Parquet metadata
/// (`strata segments inspect`).
async fn inspect(
    State(s): State<Arc<HttpState>>,
    axum::extract::Query(q): axum::extract::Query<SegmentQuery>,
) -> axum::response::Response {
    let (Some(p), Some(o)) = (q.partition, q.offset) else {
        return error(
            StatusCode::BAD_REQUEST,
            "partition and offset are required".into(),
        );
    };
    match s.broker.inspect_cold_segment(&q.topic, p, o).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn readyz(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&s.broker),
    )
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(b: &Broker) -> String {
    let m = &b.metrics;
    let mut out = String::new();
    let g = Metrics::get;
    counter(
        &mut out,
        "strata_produce_requests_total",
        "Partition appends.",
        "counter",
        g(&m.produce_requests),
    );
    counter(
        &mut out,
        "strata_produce_bytes_total",
        "Record bytes appended.",
        "counter",
        g(&m.produce_bytes),
    );
    counter(
        &mut out,
        "strata_produce_errors_total",
        "Partition appends refused.",
        "counter",
        g(&m.produce_errors),
    );
    counter(
        &mut out,
        "strata_log_flushes_total",
        "fsyncs of partition logs (acks=all as fsync_on_ack_all says, flush.messages, flush.ms, shutdown).",
        "counter",
        g(&m.log_flushes),
    );
    counter(
        &mut out,
        "strata_offloaded_segments_total",
        "Segments committed to the cold tier.",
        "counter",
        g(&m.offloaded_segments),
    );
    counter(
        &mut out,
        "strata_offload_errors_total",
        "Failed offload attempts (retried).",
        "counter",
        g(&m.offload_errors),
    );
    counter(
        &mut out,
        "strata_cold_reads_total",
        "Fetches served from the cold tier.",
        "counter",
        g(&m.cold_reads),
    );
    counter(
        &mut out,
        "strata_cold_read_errors_total",
        "Cold reads that failed (an object missing, unreadable or corrupt); each is logged.",
        "counter",
        g(&m.cold_read_errors),
    );
    counter(
        &mut out,
        "strata_cold_reads_continued_total",
        "Cold fetches that continued a kept reader (the consumer asked for the next offset).",
        "counter",
        g(&m.cold_reads_continued),
    );
    if let Some(c) = b.cold_cache_stats() {
        counter(
            &mut out,
            "strata_cold_cache_hit_bytes_total",
            "Bytes of cold objects range-read from the cold cache instead of the store.",
            "counter",
            g(&c.hit_bytes),
        );
        counter(
            &mut out,
            "strata_cold_store_read_bytes_total",
            "Bytes of cold objects range-read from the store (and then cached).",
            "counter",
            g(&c.miss_bytes),
        );
        counter(
            &mut out,
            "strata_cold_store_reads_total",
            "Range reads of cold objects from the store (each one request, or one per run of nearby ranges).",
            "counter",
            g(&c.store_reads),
        );
        counter(
            &mut out,
            "strata_cold_read_ahead_bytes_total",
            "Bytes of cold objects a ranged read got from row groups fetched ahead of it.",
            "counter",
            g(&c.ahead_bytes),
        );
    }
    counter(
        &mut out,
        "strata_offload_backlog_segments",
        "Sealed local segments not yet in the cold tier.",
        "gauge",
        b.offload_backlog() as u64,
    );
    if let Some(w) = b.write_behind_stats() {
        counter(
            &mut out,
            "strata_log_written_back_bytes_total",
            "Appended bytes whose writeback the broker started.",
            "counter",
            g(&w.written_back),
        );
        counter(
            &mut out,
            "strata_log_cache_dropped_bytes_total",
            "Appended bytes dropped from the page cache once past log_cache_bytes.",
            "counter",
            g(&w.dropped),
        );
        counter(
            &mut out,
            "strata_log_cache_skipped_bytes_total",
            "Appended bytes left to the kernel because the write-behind queue was full.",
            "counter",
            g(&w.skipped),
        );
    }
    counter(
        &mut out,
        "strata_fetch_responses_total",
        "Fetch responses sent.",
        "counter",
        g(&m.fetch_responses),
    );
    counter(
        &mut out,
        "strata_fetch_bytes_total",
        "Record bytes served by fetches.",
        "counter",
        g(&m.fetch_bytes),
    );
    counter(
        &mut out,
        "strata_connections_total",
        "Kafka connections accepted.",
        "counter",
        g(&m.connections_total),
    );
    counter(
        &mut out,
        "strata_connections_active",
        "Open Kafka connections.",
        "gauge",
        g(&m.connections_active),
    );
    counter(
        &mut out,
        "strata_requests_total",
        "Kafka requests received.",
        "counter",
        g(&m.requests_total),
    );
    counter(
        &mut out,
        "strata_request_errors_total",
        "Responses that could not be encoded.",
        "counter",
        g(&m.request_errors),
    );
    counter(
        &mut out,
        "strata_malformed_frames_total",
        "Connections closed for malformed frames.",
        "counter",
        g(&m.malformed_frames),
    );
    request_times(&mut out, &m.request_times);
    let name = "strata_errors_returned_total";
    let _ = writeln!(
        out,
        "# HELP {name} Error codes returned to clients, by code: errors the broker raised (mapped in errors.rs) and those a handler decided itself (malformed, unsupported or unknown requests). Each error decided counts once: a partition's in a Produce or Fetch response once, a request-level one once.\n# TYPE {name} counter"
    );
    for (code, n) in m.error_codes.seen() {
        let error = strata_kafka::errors::error_name(code);
        let _ = writeln!(out, "{name}{{error=\"{error}\",code=\"{code}\"}} {n}");
    }
    let name = "strata_runtime_wakeup_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How late a task woken on the broker's async runtime started running (a probe every 10 ms; below 1 ms, timer rounding). Requests arriving meanwhile waited as long before they were read.\n# TYPE {name} histogram"
    );
    histogram_series(&mut out, name, "", &m.wakeup_delays.snapshot());
    let hosted = b.hosted_partitions();
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&Partition) -> i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in &hosted {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                p.topic,
                p.index,
                value(p)
            );
        }
    };
    gauge("strata_partition_log_end_offset", "Log end offset.", &|p| {
        p.high_watermark()
    });
    gauge(
        "strata_partition_log_start_offset",
        "Log start offset.",
        &|p| p.log_start_offset(),
    );
    gauge(
        "strata_partition_size_bytes",
        "Bytes in local segments.",
        &|p| p.size_bytes() as i64,
    );
    out
}

/// `strata_request_duration_seconds{api=...}`, one histogram per request
/// type seen.
fn request_times(out: &mut String, times: &RequestTimes) {
    let name = "strata_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's arrival to its response being ready, by request type (a Fetch's includes its wait for data).\n# TYPE {name} histogram"
    );
    for (code, h) in times.seen() {
        let api = strata_kafka::versions::api_name(code);
        histogram_series(out, name, &format!("api=\"{api}\","), &h.snapshot());
    }
}

/// One series of histogram `name`: its buckets, sum and count, with
/// `labels` (empty, or `key="value",` pairs each ending in a comma).
fn histogram_series(out: &mut String, name: &str, labels: &str, s: &TimeSnapshot) {
    for (bound, n) in &s.cumulative {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {n}");
    }
    // Sum and count carry the labels without `le`; none, no braces.
    let bare = match labels.trim_end_matches(',') {
        "" => String::new(),
        l => format!("{{{l}}}"),
    };
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}le=\"+Inf\"}} {count}\n{name}_sum{bare} {sum}\n{name}_count{bare} {count}",
        count = s.count,
        sum = s.sum_seconds
    );
}
