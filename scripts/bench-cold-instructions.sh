#!/usr/bin/env bash
# The broker's user-space instructions per cold record, which the machine's
# noise does not move (unlike the A/B's records/s): one release broker run
# under callgrind, N records of 100 B offloaded (all but the 8 MiB local
# tail cold), then counters zeroed before and dumped after each consume —
# a hot one first (for the tail's share), then two cold ones.
#
#   scripts/bench-cold-instructions.sh                 this tree's release build
#   S=/tmp/strata-old N=500000 scripts/bench-cold-instructions.sh
#
# The kernel's work (socket copies) is not counted: a hot consume is a few
# instructions a record. Not a CI step (docs/benchmarks.md, session 28).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
cargo build --release --bin strata -q
TOOL=$PWD/target/release/strata
S=${S:-$TOOL} N=${N:-500000}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/strata-cold-instr.XXXXXX")
trap 'kill "$VP" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$S" dev \
  --data-dir "$WORK/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --set retention_check_interval_ms=500 >"$WORK/broker.log" 2>&1 &
VP=$!
for _ in $(seq 1 600); do
  grep -q "http listening on" "$WORK/broker.log" 2>/dev/null && break
  sleep 0.5
done
K=$(grep -o "kafka listening on [0-9.:]*" "$WORK/broker.log" | awk '{print $4}')
H=$(grep -o "http listening on [0-9.:]*" "$WORK/broker.log" | awk '{print $4}')
[ -n "$K" ] && [ -n "$H" ] || { cat "$WORK/broker.log" >&2; exit 1; }
"$TOOL" topic create --bootstrap "$K" --topic cold --partitions 1 \
  --config segment.bytes=8388608 --config local.retention.bytes=8388608 >/dev/null
"$TOOL" topic create --bootstrap "$K" --topic hot --partitions 1 >/dev/null
for t in cold hot; do
  "$TOOL" bench produce --bootstrap "$K" --topic "$t" --partitions 1 --size 100 \
    --records "$N" --json >/dev/null 2>&1
done
wait_offloaded "$H"
sleep 2
start=$(curl -s "http://$H/metrics" | awk '/^strata_partition_log_start_offset\{topic="cold"/ {print $2}')

counted() {  # counted TOPIC: instructions of one consume of TOPIC
  callgrind_control -z "$VP" >/dev/null
  "$TOOL" bench consume --bootstrap "$K" --topic "$1" --partitions 1 --records "$N" \
    --fetch-max-bytes 1048576 --idle-timeout 120 --json >/dev/null 2>&1
  callgrind_control -d "$VP" >/dev/null
  sleep 1
  # shellcheck disable=SC2012 # the newest dump
  callgrind_annotate "$(ls -t "$WORK"/cg.out* | head -1)" 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
hot=$(counted hot)
echo "hot consume of $N: $hot instructions"
cold_records=${start%.*}
for i in 1 2; do
  all=$(counted cold)
  python3 -c "
n, cold, hot, all = $N, $cold_records, $hot, $all
per_hot = hot / n
print('cold consume %d: %d instructions; %d cold records, %.0f per cold record' % ($i, all, cold, (all - (n - cold) * per_hot) / cold))"
done
