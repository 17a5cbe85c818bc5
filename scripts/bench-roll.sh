#!/usr/bin/env bash
# A/B of what segment rolls cost a busy broker: two release brokers side by
# side (binaries A and B, each with its own environment). In each round and
# on each broker in turn, 1.5 M records of 1 KiB go into one partition with
# 256 MiB segments (six rolls) while `strata bench e2e` runs at 1000 msg/s
# on another partition. Prints the producer's rate and worst request, how
# many produce requests the broker took over 100 ms to answer, how many
# times its async runtime woke a task over 10 ms late, and the other
# partition's end-to-end latency.
#
#   scripts/bench-roll.sh                          A and B: this tree's release build
#   SA=/tmp/strata-old SB=target/release/strata scripts/bench-roll.sh
#   ROUNDS=2 N=1500000 SEGMENT=268435456            rounds, records, segment.bytes
#   SETTINGS="--set retention_check_interval_ms=500"  more broker settings (here:
#                                                  housekeeping, and the producer-state
#                                                  snapshot after each roll, every 0.5 s)
#
# Not a CI step (docs/benchmarks-history.md, session 15, and decision 0009 have
# figures taken with it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${ROUNDS:-2} N=${N:-1500000} SEGMENT=${SEGMENT:-268435456}
# The matrix's page-cache budget: most of a segment is still dirty when it
# rolls, as on any broker that caches more than a segment.
# shellcheck disable=SC2086 # SETTINGS is a list of flags
ab_brokers roll-ab --set log_cache_bytes=2147483648 ${SETTINGS:-}

one() {  # one A|B ROUND
  local bin b http slow0 e2e
  bin=$([ "$1" = A ] && echo "$SA" || echo "$SB")
  b=$(cat "$WORK/$1/kafka") http=$(cat "$WORK/$1/http")
  "$bin" topic create --bootstrap "$b" --topic "roll$2" --partitions 1 \
    --config segment.bytes="$SEGMENT" >/dev/null
  "$bin" topic create --bootstrap "$b" --topic "e2e$2" --partitions 1 >/dev/null
  sync
  slow0=$(slow_requests "$http" Produce 0.1) late0=$(late_wakeups "$http" 0.01)
  "$S" bench produce --bootstrap "$b" --topic "roll$2" --partitions 1 --size 1024 \
    --batch 500 --records "$N" --acks 1 --json >"$WORK/produce.json" 2>/dev/null &
  local producer=$!
  e2e=$("$S" bench e2e --bootstrap "$b" --topic "e2e$2" --partitions 1 --rate 1000 \
    --seconds 12 --json 2>/dev/null | json '"p99 %.2f / max %.2f ms" % (d["latency_ms"]["p99"], d["latency_ms"]["max"])')
  wait "$producer"
  echo "$2 $1: produce $(json '"%.0f MB/s, max %.1f ms" % (d["mb_per_sec"], d["latency_ms"]["max"])' <"$WORK/produce.json"), $(($(slow_requests "$http" Produce 0.1) - slow0)) produce requests over 100 ms, $(($(late_wakeups "$http" 0.01) - late0)) runtime wakeups over 10 ms late; other partition's e2e $e2e"
}

for i in $(seq 1 "$ROUNDS"); do
  one A "$i"
  one B "$i"
done
