#!/usr/bin/env bash
# The benchmark matrix, reproducibly: measures this machine's own limits
# (fdatasync'd sequential write, loopback TCP), starts a release `strata dev`
# on free loopback ports, runs `strata bench` for each row, the criterion
# Parquet benchmarks for offload, and writes a Markdown table.
#
#   scripts/bench.sh                 full matrix (a few minutes)
#   QUICK=1 scripts/bench.sh         small counts: a smoke run, figures meaningless
#   OUT=file.md scripts/bench.sh     where the table goes (default target/bench/results.md;
#                                    the broker's and the end-to-end clients' logs go to file-logs/)
#   BOOTSTRAP=host:port scripts/bench.sh   run the Kafka rows against another broker
#   LOG_CACHE=bytes scripts/bench.sh the broker's log_cache_bytes (default 2 GiB; 0 = off)
#   LIBRDKAFKA=0 scripts/bench.sh    skip the librdkafka rows (rdkafka_performance,
#                                    built once from the rdkafka-sys crate's C sources)
#   REPLICATION=0 scripts/bench.sh   skip the replication rows (scripts/bench-replication.sh:
#                                    etcd and four brokers, after the single broker stops)
#
# Not a CI step: these are timings on a shared machine. Compare figures with
# the machine limits measured in the same run (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

OUT=${OUT:-target/bench/results.md}
QUICK=${QUICK:-0}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/strata-bench.XXXXXX")
BROKER_PID=""
# The broker's log and the clients' logs of the end-to-end rows are kept
# beside the table (OUT without .md, then -logs/), to place an outlier
# after the run.
LOGS=${OUT%.md}-logs
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  mkdir -p "$LOGS"
  for f in broker/broker.log lat-consumer.log lat-producer.log lat.txt; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$LOGS/$(basename "$f")"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$QUICK" = 1 ]; then
  N100=200000 N1K=20000 NALL=100000 NCOLD=100000 E2E_S=3
else
  N100=5000000 N1K=1000000 NALL=2000000 NCOLD=5000000 E2E_S=20
fi

LOG_CACHE=${LOG_CACHE:-2147483648}

# Noisy rows are run this many times and reported as medians with ranges.
RUNS=$([ "$QUICK" = 1 ] && echo 1 || echo 3)

need_cargo
command -v iperf3 >/dev/null 2>&1 || apt_install iperf3 || true
# The commit the measured binary is built from (HEAD may move during a run).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || COMMIT="$COMMIT+changes"
cargo build --release --bin strata -q
S=$PWD/target/release/strata

rows=()
# Each produce row starts settled (lib.sh: no dirty page cache left by the
# row before, whose writeback would otherwise throttle this one to the disk).
# The log (not the table) also shows the broker's memory after each row,
# so a high peak in the RSS rows can be traced to the row that made it.
row() {
  rows+=("| $1 | $2 | $3 |")
  local mem=""
  if [ -n "${BROKER_PID:-}" ] && [ -r "/proc/$BROKER_PID/status" ]; then
    mem=$(awk '/VmRSS/{r=$2} /VmHWM/{h=$2} END{printf " [broker RSS %d MiB, peak %d MiB]", r/1024, h/1024}' "/proc/$BROKER_PID/status")
  fi
  echo "  $1: $2$mem"
}

echo "== machine limits"
dd_out=$(dd if=/dev/zero of="$WORK/dd" bs=1M count=$([ "$QUICK" = 1 ] && echo 256 || echo 2048) conv=fdatasync 2>&1 | tail -1)
disk=$(echo "$dd_out" | awk -F', ' '{print $NF}')
rm -f "$WORK/dd"
row "disk: sequential write + fdatasync (dd 1 MiB blocks)" "$disk" "limit"
# What an acks=1 append really costs: a copy into the page cache. On this
# kind of VM the rate depends on whether the cache must grow into pages not
# touched lately (slow) or reuses freed ones (fast), so it is measured both
# ways here, and again (growing) right before the librdkafka rows.
pc_n=0
pagecache() {  # pagecache LABEL KEEP: dd 1 GiB; KEEP=1 leaves the file (the cache grows)
  pc_n=$((pc_n + 1))
  sync
  local out
  out=$(dd if=/dev/zero of="$WORK/pc.$pc_n" bs=1M count=$([ "$QUICK" = 1 ] && echo 256 || echo 1024) 2>&1 | tail -1)
  [ "$2" = 1 ] || rm -f "$WORK/pc.$pc_n"
  sync
  row "page cache: buffered write, $1 (dd 1 MiB blocks)" "$(echo "$out" | awk -F', ' '{print $NF}')" "limit"
}
pagecache "cache growing" 1
pagecache "into pages just freed" 0
pagecache "into pages just freed" 0
if command -v iperf3 >/dev/null 2>&1; then
  # A server not yet listening (a busy machine) fails the client: try
  # again, and report a failure in the table rather than end the run.
  tcp=""
  for _ in 1 2 3; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    server=$!
    sleep 1
    tcp=$(iperf3 -c 127.0.0.1 -p "$port" -t $([ "$QUICK" = 1 ] && echo 2 || echo 5) -J 2>/dev/null \
          | python3 -c 'import json,sys; print("%.0f MB/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))' 2>/dev/null) \
      && break
    tcp=""
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  done
  row "loopback TCP, one stream (iperf3)" "${tcp:-iperf3 failed (3 tries)}" "limit"
else
  row "loopback TCP" "iperf3 not available" "limit"
fi
row "cores" "$(nproc)" "limit"

if [ -z "${BOOTSTRAP:-}" ]; then
  echo "== starting strata dev (release)"
  # log_cache_bytes: see docs/decisions/0005-write-behind.md. The default
  # (a quarter of memory, 6 GiB here) is more than this run writes before
  # its late rows, which would then append into never-used memory, which
  # this VM hands out at ~0.5 GB/s; 2 GiB keeps the broker's pages recycling
  # by then, and is more than the rows before 1 KiB produce append (with
  # 1 GiB that row paid for writing back and dropping the rows before it).
  start_broker "$WORK/broker" "$S" "" \
    --set retention_check_interval_ms=500 --set "log_cache_bytes=$LOG_CACHE" \
    || { BROKER_PID=$(cat "$WORK/broker/pid"); exit 1; }
  BROKER_PID=$(cat "$WORK/broker/pid")
  BOOTSTRAP=$(cat "$WORK/broker/kafka")
  HTTP=$(cat "$WORK/broker/http")
fi
B=$BOOTSTRAP
echo "== strata bench against $B"

settle
r=$("$S" bench produce --bootstrap "$B" --topic p100 --size 100 --records "$N100" --acks 1 --json)
row "produce 100 B, acks=1, 4 partitions" "$(echo "$r" | json '"%.2f M records/s (%.0f MB/s), p99 %.2f ms" % (d["records_per_sec"]/1e6, d["mb_per_sec"], d["latency_ms"]["p99"])')" "≥ 3.3 M records/s"
# Consumers at the tail read what was just appended: from the page cache.
consume_p100() {
  r=$("$S" bench consume --bootstrap "$B" --topic p100 --size 100 --records "$N100" --json)
  row "$1" "$(echo "$r" | json '"%.2f M records/s (%.0f MB/s)" % (d["records_per_sec"]/1e6, d["mb_per_sec"])')" "$2"
}
consume_p100 "consume hot 100 B, 4 partitions" "≥ 1.7 M records/s"
# 1 KiB produces, twice: here, on a young broker whose write-behind budget
# is not yet full (its page cache still grows: on this kind of VM, into
# memory handed back to the host, at the "cache growing" rate when that
# memory is cold), and again below, once about log_cache_bytes were
# appended and the broker reuses the pages it drops (its steady state).
produce_1k() {  # produce_1k TOPIC LABEL
  settle
  r=$("$S" bench produce --bootstrap "$B" --topic "$1" --size 1024 --batch 500 --records "$N1K" --acks 1 --json)
  row "$2" "$(echo "$r" | json '"%.0f MB/s (%.0f k records/s)" % (d["mb_per_sec"], d["records_per_sec"]/1e3)')" "≥ 1 GB/s"
}
produce_1k p1k "produce 1 KiB, acks=1, 4 partitions, young broker (page cache growing)"
settle
r=$("$S" bench produce --bootstrap "$B" --topic pall --size 100 --records "$NALL" --acks -1 --json)
row "produce 100 B, acks=all (fsync), 4 partitions" "$(echo "$r" | json '"%.2f M records/s, p99 %.2f ms" % (d["records_per_sec"]/1e6, d["latency_ms"]["p99"])')" "—"
settle
r=$("$S" bench produce --bootstrap "$B" --topic pidem --size 100 --records "$NALL" --idempotence --acks all --json)
row "produce 100 B, idempotent, acks=all (fsync), 4 partitions" "$(echo "$r" | json '"%.2f M records/s, p99 %.2f ms" % (d["records_per_sec"]/1e6, d["latency_ms"]["p99"])')" "—"
# The same records read again after ~1.4 GB of newer appends: what the
# broker wrote back and dropped from the page cache (those with more than
# 3/4 of log_cache_bytes after them) comes from disk.
[ "$QUICK" = 1 ] || consume_p100 "consume 100 B, 4 partitions, again after 1.4 GB of newer appends (partly from disk)" "—"
# What the write-behind had done by then (a broker's own metrics).
if [ -n "${HTTP:-}" ]; then
  echo "  write-behind before the steady-state row: written back $(metric "$HTTP" strata_log_written_back_bytes_total) B, dropped $(metric "$HTTP" strata_log_cache_dropped_bytes_total) B"
fi
produce_1k p1k2 "produce 1 KiB, acks=1, 4 partitions, steady state (after ~log_cache_bytes of appends)"
settle
# A stall probe runs beside it: a process that sleeps 1 ms at a time and
# records how late it wakes. A late wake of tens of ms at the same time as
# the row's max says the machine (the VM's vCPUs) stalled, not the broker.
# The broker's own request times say whether a late record was late
# inside it: produce requests over 10 ms, and fetches over 25 ms (a fetch
# waits up to 10 ms for data, which comes every millisecond here).
broker_slow() {
  [ -n "${HTTP:-}" ] &&
    echo "$(slow_requests "$HTTP" Produce 0.01) $(slow_requests "$HTTP" Fetch 0.025) $(late_wakeups "$HTTP" 0.005) $(errors_returned "$HTTP")"
}
slow_since() {  # slow_since SNAPSHOT: the broker's slow requests since broker_slow said SNAPSHOT
  [ -n "$1" ] || return 0
  local p0 f0 w0 e0 p1 f1 w1 e1
  read -r p0 f0 w0 e0 <<<"$1"
  read -r p1 f1 w1 e1 <<<"$(broker_slow)"
  echo "; in the broker: $((p1 - p0)) produce requests over 10 ms, $((f1 - f0)) fetches over 25 ms, $((w1 - w0)) runtime wakeups over 5 ms late, $((e1 - e0)) errors returned"
}
slow0=$(broker_slow || true)
stall_probe "$E2E_S" >"$WORK/stall.txt" &
probe=$!
r=$("$S" bench e2e --bootstrap "$B" --topic e2e --partitions 1 --rate 1000 --seconds "$E2E_S" --json)
wait "$probe" || true
inside=$(slow_since "$slow0")
row "end-to-end at 1000 msg/s, 1 partition" "$(echo "$r" | json '"p50 %.2f / p99 %.2f / p99.9 %.2f / max %.2f ms" % tuple(d["latency_ms"][k] for k in ("p50","p99","p999","max"))'); a 1 ms sleep woke up to $(cat "$WORK/stall.txt") ms late meanwhile$inside" "p99 ≤ 1.5 ms, max ≤ 10 ms"

if [ "${LIBRDKAFKA:-1}" = 1 ]; then
  echo "== librdkafka (rdkafka_performance) against $B"
  RP=$(need_rdkafka_performance)
  for t in rk100 rk1024 rklat; do
    "$S" topic create --bootstrap "$B" --topic $t --partitions $([ $t = rklat ] && echo 1 || echo 4) >/dev/null
  done
  # Client-bound and noisy: each librdkafka row is run $RUNS times and
  # reported as the median with the range.
  median() {  # median SCALE UNIT RATE...: median (min-max) of the rates x SCALE
    python3 -c "
import statistics, sys
s, u = float(sys.argv[1]), sys.argv[2]
v = sorted(float(x) * s for x in sys.argv[3:] if x)
print('%.2f %s (%.2f-%.2f, %d runs)' % (statistics.median(v), u, v[0], v[-1], len(v)) if v else 'no result')
" "$@"
  }
  runs() {  # runs SCALE UNIT CMD...: median (min-max) of CMD's msgs/s x SCALE
    local scale=$1 unit=$2 out=()
    shift 2
    for i in $(seq 1 "$RUNS"); do out+=("$("$@" "$i" 2>&1 | rk_rate)"); done
    median "$scale" "$unit" "${out[@]}"
  }
  rk_produce() {  # rk_produce SIZE COUNT RUN
    settle
    rk_produce_load "$RP" "$B" "rk$1" "$1" "$2"
  }
  pagecache "cache growing, before the librdkafka rows" 1
  # Its fetch debug log (stderr) counts the fetch-queue backoffs below.
  rk_group() { rk_group_consume "$RP" "$B" rk100 "rkgroup$2" "$1" -X debug=fetch 2>>"$WORK/rkgroup.debug"; }
  # The same with librdkafka's fetch-queue backoff at 10 ms: by default a
  # fetcher whose queue holds queued.max.messages.kbytes (64 MiB) waits
  # fetch.queue.backoff.ms (1000) before fetching again, while this
  # application drains the queue in ~0.4 s, then waits (librdkafka issue
  # 2879; docs/benchmarks-history.md, session 14). Against a broker that serves
  # faster than the application consumes, the default row measures those
  # waits.
  rk_group_bo() { rk_group_consume "$RP" "$B" rk100 "rkgroupbo$2" "$1" -X fetch.queue.backoff.ms=10; }
  # The 100 B produce is the client's: its producing thread takes a whole
  # core (session 22). Its ceiling on the hour is measured in turns with
  # it: the same load against librdkafka's own mock cluster
  # (test.mock.num.brokers, brokers inside the client's process that keep
  # each batch in memory as sent, unchecked; 4 partitions by default).
  rk_mock() { settle; rk_produce_load "$RP" 127.0.0.1:9 rkmock "$1" "$2" -X test.mock.num.brokers=1; }
  strata100=() mock100=()
  for _ in $(seq 1 "$RUNS"); do
    strata100+=("$(rk_produce 100 "$N100" 2>&1 | rk_rate)")
    mock100+=("$(rk_mock 100 "$N100" 2>&1 | rk_rate)")
  done
  row "librdkafka produce 100 B, acks=1, 4 partitions" "$(median 1e-6 "M records/s" "${strata100[@]}")" "≥ 3.3 M records/s"
  row "librdkafka produce 100 B, acks=1, against librdkafka's in-process mock cluster, in turns with the row above (the client's ceiling)" "$(median 1e-6 "M records/s" "${mock100[@]}")" "reference"
  row "librdkafka produce 1 KiB, acks=1, 4 partitions" "$(runs 1.024e-3 "MB/s" rk_produce 1024 "$N1K")" "≥ 1 GB/s"
  r=$(runs 1e-6 "M records/s" rk_group "$N100")
  pauses=$(grep -c "Fetch backoff for [0-9]*ms: Local: Queue full" "$WORK/rkgroup.debug" || true)
  row "librdkafka consume 100 B, consumer group, 4 partitions" \
    "$r; queue-full fetch backoffs (1 s, one partition each): ${pauses:-0}" "≥ 1.7 M records/s"
  row "librdkafka consume 100 B, consumer group, 4 partitions, fetch.queue.backoff.ms=10" "$(runs 1e-6 "M records/s" rk_group_bo "$N100")" "≥ 1.7 M records/s"
  # End to end with two C clients in separate processes (no interpreter in
  # the path): the consumer writes each record's latency in microseconds.
  lat_n=$((1000 * E2E_S))
  slow0=$(broker_slow || true)
  timeout $((E2E_S + 60)) "$RP" -C -t rklat -p 0 -b "$B" -l -o end -X fetch.wait.max.ms=10 \
    -X fetch.min.bytes=1 -c "$lat_n" -A "$WORK/lat.txt" >"$WORK/lat-consumer.log" 2>&1 &
  lat_pid=$!
  sleep 2
  stall_probe "$E2E_S" >"$WORK/stall.txt" &
  probe=$!
  timeout $((E2E_S + 60)) "$RP" -P -t rklat -p 0 -b "$B" -l -r 1000 -s 100 -c "$lat_n" \
    -X linger.ms=0 -a 1 >"$WORK/lat-producer.log" 2>&1 || true
  wait "$lat_pid" || true
  wait "$probe" || true
  inside=$(slow_since "$slow0")
  row "librdkafka end-to-end at 1000 msg/s, linger.ms=0, fetch.wait.max.ms=10" "$(python3 -c "
import sys
v = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
n = len(v)
p = lambda q: v[min(n - 1, int(q * n))] / 1000
print('p50 %.2f / p99 %.2f / p99.9 %.2f / max %.2f ms (%d records)' % (p(.5), p(.99), p(.999), v[-1] / 1000, n))
" "$WORK/lat.txt"); a 1 ms sleep woke up to $(cat "$WORK/stall.txt") ms late meanwhile$inside" "p99 ≤ 1.5 ms, max ≤ 10 ms"
fi

if [ -n "$BROKER_PID" ]; then
  rss=$(awk '/VmHWM/{printf "%.0f MiB", $2/1024}' "/proc/$BROKER_PID/status")
  row "broker peak RSS (VmHWM) through the hot rows (no cold cache in use yet)" "$rss" "≤ 64 MiB + caches"
  # Cold vs hot: one topic offloaded (8 MiB segments, 8 MiB hot tail), one not.
  "$S" topic create --bootstrap "$B" --topic cold --partitions 1 \
    --config segment.bytes=8388608 --config local.retention.bytes=8388608 >/dev/null
  "$S" topic create --bootstrap "$B" --topic hot --partitions 1 >/dev/null
  for t in cold hot; do
    "$S" bench produce --bootstrap "$B" --topic $t --partitions 1 --size 100 --records "$NCOLD" --json >/dev/null
  done
  wait_offloaded "$HTTP"
  sleep 2
  # Hot and cold read in turns, $RUNS pairs, medians compared. The JSON is
  # parsed after each run ends: a parser started in the same pipeline would
  # take CPU from the run it measures (one core of two for ~50 ms).
  consume_rate() {
    "$S" bench consume --bootstrap "$B" --topic "$1" --partitions 1 --records "$NCOLD" --json >"$WORK/consume.json"
    json 'd["records_per_sec"]' <"$WORK/consume.json"
  }
  hots=() colds=()
  for _ in $(seq 1 "$RUNS"); do
    hots+=("$(consume_rate hot)")
    colds+=("$(consume_rate cold)")
  done
  row "consume cold vs hot, 100 B, 1 partition (medians)" "$(python3 -c "
import statistics, sys
n = len(sys.argv) // 2
h, c = [float(x) / 1e6 for x in sys.argv[1:n + 1]], [float(x) / 1e6 for x in sys.argv[n + 1:]]
mh, mc = statistics.median(h), statistics.median(c)
print('cold %.2f M/s (%.2f-%.2f) = %.0f %% of hot %.2f M/s (%.2f-%.2f), %d runs each' % (mc, min(c), max(c), 100 * mc / mh, mh, min(h), max(h), n))
" "${hots[@]}" "${colds[@]}")" "cold ≥ 50 % of hot"
  if [ "${LIBRDKAFKA:-1}" = 1 ]; then
    # The same topics read by librdkafka's consumer (one partition, from the start).
    rk_one() { "$RP" -C -t "$1" -p 0 -b "$B" -o beginning -c "$NCOLD" -X fetch.message.max.bytes=8000000 -q; }
    hot=$(runs 1 "" rk_one hot | awk '{print $1}')
    cold=$(runs 1 "" rk_one cold | awk '{print $1}')
    row "librdkafka consume cold vs hot, 100 B, 1 partition (medians)" "$(python3 -c "print('cold %.2f M/s = %.0f %% of hot %.2f M/s' % ($cold/1e6, 100*$cold/$hot, $hot/1e6))")" "cold ≥ 50 % of hot"
  fi
  rss=$(awk '/VmHWM/{printf "%.0f MiB", $2/1024}' "/proc/$BROKER_PID/status")
  row "broker peak RSS (VmHWM) over the whole run" "$rss" "≤ 64 MiB + caches (cold cache 256 MiB)"
fi

echo "== offload: Parquet conversion (criterion, one core)"
enc=$(cargo bench -q -p strata-cold --bench cold -- parquet_encode $([ "$QUICK" = 1 ] && echo "--warm-up-time 1 --measurement-time 2") 2>/dev/null \
      | awk '/^parquet_encode\//{name=$1} /thrpt:/ && name != "" {gsub(/\[|\]/,""); print name": "$4" "$5; name=""}')
while IFS= read -r line; do
  [ -n "$line" ] && row "offload conversion ${line%%:*}" "${line#*: }" "≥ 200 MB/s per core"
done <<<"$enc"

# Replication (RF=3 end to end, partition moves): a cluster of its own,
# so only when this script started the broker, and after it stops.
if [ "${REPLICATION:-1}" = 1 ] && [ -n "$BROKER_PID" ]; then
  echo "== replication (scripts/bench-replication.sh)"
  kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
  if OUT="$WORK/replication.md" QUICK="$QUICK" scripts/bench-replication.sh; then
    # Its rows are "| what | result |": the RF=3 end to end has a target.
    while IFS= read -r line; do
      what=$(echo "$line" | awk -F' [|] ' '{print $1}' | sed 's/^| //')
      result=$(echo "$line" | awk -F' [|] ' '{print $2}' | sed 's/ |$//')
      case $what in
        e2e*RF=3*) row "$what" "$result" "p99 ≤ 5 ms" ;;
        *) row "$what" "$result" "—" ;;
      esac
    done < <(grep '^| ' "$WORK/replication.md" | tail -n +2)
  else
    row "replication (scripts/bench-replication.sh)" "failed: see the log" "p99 ≤ 5 ms"
  fi
fi

mkdir -p "$(dirname "$OUT")"
{
  echo "# Strata benchmark run — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); strata $COMMIT$([ "$QUICK" = 1 ] && echo ' (QUICK=1: smoke run)')."
  echo "Client (strata bench) and broker share the machine. Broker: \`strata dev\`, log_cache_bytes=$LOG_CACHE."
  echo
  echo "| What | Measured | Target |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$OUT"
echo "== wrote $OUT"
cat "$OUT"
