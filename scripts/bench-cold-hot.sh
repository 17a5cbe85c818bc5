#!/usr/bin/env bash
# Cold vs hot consume: the same 2,000,000 x 100 B records in two topics, one
# kept hot, one offloaded to the local object store with a tiny hot tail.
set -u
RP=${RP:-/tmp/rdk/examples/rdkafka_performance}  # see docs/benchmarks.md to build it
S=${STRATA:-./target/release/strata}
D=${DATA_DIR:-/tmp/strata-benchcold}
pkill -f "strata dev --data-dir $D" ; rm -rf $D
$S dev --data-dir $D --listen 127.0.0.1:19092 --http 127.0.0.1:19644 --set retention_check_interval_ms=500 > /tmp/coldhot-broker.log 2>&1 &
sleep 1
B=127.0.0.1:19092
$S topic create --bootstrap $B --topic hot --partitions 1 >/dev/null
$S topic create --bootstrap $B --topic cold --partitions 1 --config segment.bytes=8388608 --config local.retention.bytes=8388608 >/dev/null
for t in hot cold; do
  $RP -P -t $t -p 0 -b $B -s 100 -c 2000000 -a 1 -X linger.ms=5 -X batch.size=1000000 -q 2>&1 | grep -o "[0-9]* msgs/s.*MB/s" | sed "s/^/produce $t: /"
done
for i in $(seq 1 120); do
  bl=$(curl -s 127.0.0.1:19644/metrics | awk '/^strata_offload_backlog_segments /{print $2}')
  [ "$bl" = "0" ] && break; sleep 1
done
sleep 2
curl -s 127.0.0.1:19644/metrics | grep -E '^strata_partition_log_start_offset|^strata_offloaded'
for t in hot cold; do
  $RP -C -t $t -p 0 -b $B -o beginning -c 2000000 -X fetch.message.max.bytes=8000000 -q 2>&1 | grep -o "[0-9]* messages ([0-9]* bytes) consumed in [0-9]*ms: [0-9]* msgs/s ([0-9.]* MB/s)" | sed "s/^/consume $t: /"
done
pkill -f "strata dev --data-dir $D"
du -sh $D/logs/* $D/objects 2>/dev/null
