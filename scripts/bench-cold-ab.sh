#!/usr/bin/env bash
# A/B of the cold read path: two release brokers side by side (binaries A
# and B, each with its own environment), the same records offloaded to
# each, then cold consumes alternated between them, round after round. On a
# shared, noisy machine only alternated comparisons mean anything; this
# prints each round's records/s and the broker's CPU time for the consume.
#
#   scripts/bench-cold-ab.sh                       A and B: this tree's release build
#   SA=/tmp/strata-old SB=target/release/strata scripts/bench-cold-ab.sh
#   EB="MALLOC_ARENA_MAX=2" scripts/bench-cold-ab.sh   B with extra environment
#   N=5000000 SIZE=100 ROUNDS=6 FETCH=1048576      records, record size, rounds, fetch size
#   SETTINGS="--set cold_cache_bytes=0 --set object_store_latency_ms=20"
#                                                  broker flags (here: every read ranged, 20 ms a request)
#
# Not a CI step (docs/benchmarks-history.md, session 8, and docs/benchmarks.md
# have figures taken with it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N=${N:-5000000} SIZE=${SIZE:-100} ROUNDS=${ROUNDS:-6} FETCH=${FETCH:-1048576}
# shellcheck disable=SC2086 # SETTINGS is a list of flags
ab_brokers cold-ab --set retention_check_interval_ms=500 ${SETTINGS:-}

for x in A B; do
  B=$(cat "$WORK/$x/kafka")
  "$S" topic create --bootstrap "$B" --topic cold --partitions 1 \
    --config segment.bytes=8388608 --config local.retention.bytes=8388608 >/dev/null
  "$S" bench produce --bootstrap "$B" --topic cold --partitions 1 --size "$SIZE" \
    --records "$N" --json >/dev/null 2>&1
done
# Wait until every segment of both is offloaded (the hot tail is 8 MiB).
for x in A B; do
  wait_offloaded "$(cat "$WORK/$x/http")"
done
sleep 2

consume() {  # consume A|B ROUND: a cold consume, in M records/s
  # The JSON is parsed after the run: a parser in the pipeline would
  # take a core from the run it measures.
  "$S" bench consume --bootstrap "$(cat "$WORK/$1/kafka")" --topic cold --partitions 1 \
    --records "$N" --fetch-max-bytes "$FETCH" --json >"$WORK/out.json" 2>/dev/null
  json '"%.2f" % (d["records_per_sec"] / 1e6)' <"$WORK/out.json"
}
ab_rounds "$ROUNDS" consume
