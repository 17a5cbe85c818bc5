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

N=${N:-5000000} SIZE=${SIZE:-100} ROUNDS=${ROUNDS:-8} PARTITIONS=${PARTITIONS:-4}
RP=$(need_rdkafka_performance)
ab_brokers group-ab

for x in A B; do
  B=$(cat "$WORK/$x/kafka")
  "$S" topic create --bootstrap "$B" --topic ab --partitions "$PARTITIONS" >/dev/null
  # As the matrix produces its rk100 topic.
  "$RP" -P -t ab -b "$B" -s "$SIZE" -c "$N" -a 1 -X linger.ms=5 -X batch.size=1000000 \
    -X queue.buffering.max.messages=2000000 -q >/dev/null 2>&1
done
sync
sleep 2

echo "round: A M records/s (broker CPU s) | B M records/s (broker CPU s)"
for i in $(seq 1 "$ROUNDS"); do
  line="$i:"
  for x in A B; do
    extra=XA
    [ $x = B ] && extra=XB
    c0=$(ab_cpu $x)
    # shellcheck disable=SC2086 # XA/XB are lists of flags
    rate=$(timeout 120 "$RP" -G "ab$x$i" -t ab -b "$(cat "$WORK/$x/kafka")" -o beginning -c "$N" \
      -X auto.offset.reset=earliest ${!extra:-} -q 2>&1 | grep -o '[0-9]* msgs/s' | tail -1 | awk '{print $1}')
    c1=$(ab_cpu $x)
    line="$line $x $(python3 -c "print('%.2f' % (float('${rate:-0}') / 1e6))") ($(python3 -c "print('%.2f' % ($c1 - $c0))"))"
  done
  echo "$line"
done
