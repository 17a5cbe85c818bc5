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
# Not a CI step (docs/benchmarks-history.md, session 14, has figures taken with it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N=${N:-5000000} SIZE=${SIZE:-100} ROUNDS=${ROUNDS:-8} PARTITIONS=${PARTITIONS:-4}
RP=$(need_rdkafka_performance)
ab_brokers group-ab

for x in A B; do
  B=$(cat "$WORK/$x/kafka")
  "$S" topic create --bootstrap "$B" --topic ab --partitions "$PARTITIONS" >/dev/null
  rk_produce_load "$RP" "$B" ab "$SIZE" "$N" >/dev/null 2>&1
done
sync
sleep 2

consume() {  # consume A|B ROUND: a new group's consume, in M records/s
  local extra=XA
  [ "$1" = B ] && extra=XB
  # shellcheck disable=SC2086 # XA/XB are lists of flags
  rk_group_consume "$RP" "$(cat "$WORK/$1/kafka")" ab "ab$1$2" "$N" ${!extra:-} 2>&1 \
    | rk_rate | python3 -c "import sys; print('%.2f' % (float(sys.stdin.read().strip() or 0) / 1e6))"
}
ab_rounds "$ROUNDS" consume
