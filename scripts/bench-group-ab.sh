#!/usr/bin/env bash
# A/B of librdkafka's consumer-group consume (the matrix's "librdkafka
# consume 100 B, consumer group" row): two release brokers side by side
# (binaries A and B, each with its own environment), the same records
# produced to each by rdkafka_performance, then group consumes from the
# beginning alternated between them, round after round, each with a new
# group. On a shared, noisy machine only alternated comparisons mean
# anything; this prints each round's records/s and the broker's CPU time
# for the consume.
#
#   scripts/bench-group-ab.sh                       A and B: this tree's release build
#   SA=/tmp/strata-old SB=target/release/strata scripts/bench-group-ab.sh
#   EB="MALLOC_ARENA_MAX=2" scripts/bench-group-ab.sh   B with extra environment
#   N=5000000 SIZE=100 ROUNDS=8 PARTITIONS=4         records, record size, rounds
#   XA="-X fetch.wait.max.ms=10" XB=...              extra rdkafka_performance flags
#
# Not a CI step (docs/benchmarks.md, session 14, has figures taken with it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_cargo
cargo build --release --bin strata -q
S=$PWD/target/release/strata
SA=${SA:-$S} SB=${SB:-$S}
N=${N:-5000000} SIZE=${SIZE:-100} ROUNDS=${ROUNDS:-8} PARTITIONS=${PARTITIONS:-4}
RP=$(need_rdkafka_performance)
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/strata-group-ab.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start() {  # start NAME BINARY ENV
  mkdir -p "$WORK/$1"
  # shellcheck disable=SC2086 # ENV is a list of NAME=value words
  env ${3:-} "$2" dev --data-dir "$WORK/$1/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
    >"$WORK/$1/broker.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$WORK/$1/pid"
}
start A "$SA" "${EA:-}"
start B "$SB" "${EB:-}"

for x in A B; do
  for _ in $(seq 1 100); do
    grep -q "http listening on" "$WORK/$x/broker.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -o "kafka listening on [0-9.:]*" "$WORK/$x/broker.log" | awk '{print $4}' >"$WORK/$x/kafka"
  [ -s "$WORK/$x/kafka" ] || { echo "error: broker $x did not start" >&2; cat "$WORK/$x/broker.log" >&2; exit 1; }
  B=$(cat "$WORK/$x/kafka")
  "$S" topic create --bootstrap "$B" --topic ab --partitions "$PARTITIONS" >/dev/null
  # As the matrix produces its rk100 topic.
  "$RP" -P -t ab -b "$B" -s "$SIZE" -c "$N" -a 1 -X linger.ms=5 -X batch.size=1000000 \
    -X queue.buffering.max.messages=2000000 -q >/dev/null 2>&1
done
sync
sleep 2

cpu() { awk '{print $14 + $15}' "/proc/$(cat "$WORK/$1/pid")/stat"; }
echo "round: A M records/s (broker CPU s) | B M records/s (broker CPU s)"
for i in $(seq 1 "$ROUNDS"); do
  line="$i:"
  for x in A B; do
    extra=XA
    [ $x = B ] && extra=XB
    c0=$(cpu $x)
    # shellcheck disable=SC2086 # XA/XB are lists of flags
    rate=$(timeout 120 "$RP" -G "ab$x$i" -t ab -b "$(cat "$WORK/$x/kafka")" -o beginning -c "$N" \
      -X auto.offset.reset=earliest ${!extra:-} -q 2>&1 | grep -o '[0-9]* msgs/s' | tail -1 | awk '{print $1}')
    c1=$(cpu $x)
    line="$line $x $(python3 -c "print('%.2f' % (float('${rate:-0}') / 1e6))") ($(python3 -c "print('%.2f' % (($c1 - $c0) / 100))"))"
  done
  echo "$line"
done
