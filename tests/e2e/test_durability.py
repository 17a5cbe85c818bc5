"""Durability across kill -9 and SIGTERM of the broker."""
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import create_topic


def produce_acked(bootstrap, topic, start, n, partitions):
    """Produces values start..start+n with acks=all; returns {value: (partition, offset)} acked."""
    acked = {}
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                  "enable.idempotence": True})

    def cb(err, msg):
        if err is None:
            acked[int(msg.value())] = (msg.partition(), msg.offset())

    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions, on_delivery=cb)
        p.poll(0)
    assert p.flush(30) == 0
    return acked


def read_partition(bootstrap, topic, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify",
                  "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, low)])
    out = []
    deadline = time.time() + 30
    while len(out) < high - low and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append((m.offset(), int(m.value())))
    c.close()
    return out, high


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_acknowledged_records_and_offsets_survive_broker_death(fresh_strata, topic_name, how):
    s = fresh_strata.start()
    parts = 3
    create_topic(s.bootstrap, topic_name, partitions=parts)
    acked = produce_acked(s.bootstrap, topic_name, 0, 3000, parts)
    assert len(acked) == 3000

    group = f"g-{topic_name}"
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": group, "enable.auto.commit": False})
    committed = [TopicPartition(topic_name, p, 100 + p) for p in range(parts)]
    c.commit(offsets=committed, asynchronous=False)
    c.close()

    if how == "kill9":
        s.kill9()
    else:
        assert s.stop() == 0, "SIGTERM must exit 0"
        assert "stopped" in s.log()
    s.start()

    # Every acknowledged record is there, at the offset it was acknowledged with.
    for p in range(parts):
        rows, high = read_partition(s.bootstrap, topic_name, p)
        assert [o for o, _ in rows] == list(range(high)), "no gaps"
        for o, v in rows:
            assert acked[v] == (p, o)
        assert high == sum(1 for v in acked.values() if v[0] == p)

    # Offsets continue without gaps or duplicates.
    more = produce_acked(s.bootstrap, topic_name, 3000, 300, parts)
    for p in range(parts):
        offs = sorted(o for (pp, o) in more.values() if pp == p)
        assert offs == list(range(1000, 1100))

    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic_name, p) for p in range(parts)], timeout=10)
    assert [tp.offset for tp in got] == [100, 101, 102]
    c.close()
