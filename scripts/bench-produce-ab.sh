#!/usr/bin/env bash
# A/B of librdkafka's produce (the matrix's "librdkafka produce 100 B"
# row): two release brokers side by side (binaries A and B, each with its
# own environment), rdkafka_performance producing to each in turn, round
# after round, each round to a new topic. On a shared, noisy machine only
# alternated comparisons mean anything; this prints each round's
# records/s and the broker's CPU time for the produce.
#
#   scripts/bench-produce-ab.sh                     A and B: this tree's release build
#   SA=/tmp/strata-old SB=target/release/strata scripts/bench-produce-ab.sh
#   N=2000000 SIZE=100 ROUNDS=6 PARTITIONS=4        records, record size, rounds
#
# Not a CI step (docs/benchmarks.md, session 22, has figures taken with it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N=${N:-2000000} SIZE=${SIZE:-100} ROUNDS=${ROUNDS:-6} PARTITIONS=${PARTITIONS:-4}
RP=$(need_rdkafka_performance)
ab_brokers produce-ab

produce() {  # produce A|B ROUND: a produce to a new topic, in M records/s
  local b
  b=$(cat "$WORK/$1/kafka")
  "$S" topic create --bootstrap "$b" --topic "ab$2" --partitions "$PARTITIONS" >/dev/null
  sync
  rk_produce_load "$RP" "$b" "ab$2" "$SIZE" "$N" 2>&1 \
    | rk_rate | python3 -c "import sys; print('%.2f' % (float(sys.stdin.read().strip() or 0) / 1e6))"
}
ab_rounds "$ROUNDS" produce
