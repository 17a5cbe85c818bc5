"""Write-behind (docs/decisions/0005-write-behind.md): a broker keeps only
its last `log_cache_bytes` of appends in the page cache, writing back and
dropping older ones; nothing a consumer reads changes."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import Strata, create_topic, metric, wait_until

CHUNK = 8 << 20  # strata_log::WRITE_BEHIND_CHUNK_BYTES in release builds


def test_appends_past_log_cache_bytes_are_dropped_from_the_cache_and_read_back_whole(tmp_path):
    s = Strata(tmp_path / "data", extra_args=["--set", f"log_cache_bytes={2 * CHUNK}"]).start()
    try:
        topic = create_topic(s.bootstrap, "written-behind", partitions=2)
        # 64 MB over two partitions: three whole chunks each, six in all.
        n, pad = 64_000, b"v" * 1000
        p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5,
                      "queue.buffering.max.messages": 200_000})
        for i in range(n):
            while True:
                try:
                    p.produce(topic, value=b"%08d" % i + pad, partition=i % 2)
                    break
                except BufferError:
                    p.poll(0.05)
        assert p.flush(60) == 0

        # Every whole chunk reaches the thread; those with three quarters of
        # the budget after them are written back, those with all of it
        # dropped: at least 4 and 2 of the 6 chunks.
        wait_until(lambda: (metric(s, "strata_log_cache_dropped_bytes_total") or 0) >= 2 * CHUNK,
                   timeout=30, what="chunks dropped from the page cache")
        assert metric(s, "strata_log_written_back_bytes_total") >= 4 * CHUNK
        assert metric(s, "strata_log_cache_skipped_bytes_total") == 0

        # Dropped from the cache, not from the log: all of it reads back.
        c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "reader",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        seen = set()
        deadline = time.time() + 60
        while len(seen) < n and time.time() < deadline:
            for m in c.consume(1000, 0.5):
                assert m.error() is None, m.error()
                i = int(m.value()[:8])
                assert m.value() == b"%08d" % i + pad and m.partition() == i % 2
                seen.add(i)
        c.close()
        assert len(seen) == n
    finally:
        s.stop()
    assert "panicked" not in s.log()
