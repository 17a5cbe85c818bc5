"""Producing and consuming with librdkafka (confluent-kafka), kafka-python and kcat."""
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from conftest import create_topic


def produce(bootstrap, topic, records, **conf):
    """Produces (key, value, headers, timestamp, partition) tuples; returns delivery reports."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **conf})
    reports = []

    def cb(err, msg):
        reports.append((err, msg.partition(), msg.offset()))

    for r in records:
        key, value, headers, ts, part = (list(r) + [None] * 5)[:5]
        kw = {"key": key, "value": value, "on_delivery": cb}
        if headers is not None:
            kw["headers"] = headers
        if ts is not None:
            kw["timestamp"] = ts
        if part is not None:
            kw["partition"] = part
        p.produce(topic, **kw)
        p.poll(0)
    assert p.flush(30) == 0
    return reports


def consume_all(bootstrap, topic, expected, timeout=30, **conf):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    while len(out) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    c.close()
    return out


def test_keyed_messages_stay_in_order_on_one_partition(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=4)
    recs = [(b"same-key", f"{i}".encode()) for i in range(200)]
    reports = produce(strata.bootstrap, topic_name, recs)
    assert all(err is None for err, _, _ in reports)
    assert len({p for _, p, _ in reports}) == 1
    msgs = consume_all(strata.bootstrap, topic_name, 200)
    assert [int(m.value()) for m in msgs] == list(range(200))
    assert [m.offset() for m in msgs] == list(range(200))


def test_unkeyed_messages_spread_with_dense_offsets_and_exact_watermarks(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=3)
    # The sticky partitioner switches partition per batch; small batches spread.
    reports = produce(strata.bootstrap, topic_name, [(None, f"v{i}".encode()) for i in range(600)],
                      **{"batch.num.messages": 10, "linger.ms": 0})
    by_part = {}
    for err, p, o in reports:
        assert err is None
        by_part.setdefault(p, []).append(o)
    assert len(by_part) == 3, by_part.keys()
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": "wm"})
    for p, offs in by_part.items():
        assert sorted(offs) == list(range(len(offs))), "offsets 0..N-1 without gaps"
        low, high = c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)
        assert (low, high) == (0, len(offs))
    c.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_codecs_round_trip(strata, topic_name, codec):
    create_topic(strata.bootstrap, topic_name)
    values = [(f"k{i}".encode(), (f"value-{i}-" * 20).encode()) for i in range(300)]
    produce(strata.bootstrap, topic_name, values, **{"compression.type": codec})
    msgs = consume_all(strata.bootstrap, topic_name, 300)
    assert [(m.key(), m.value()) for m in msgs] == values


def test_headers_timestamps_null_keys_and_values(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    ts = 1_700_000_000_000
    recs = [
        (None, b"no-key", [("h1", b"a"), ("h1", b"b"), ("h2", None)], ts),
        (b"k", None, [], ts + 1),
        (None, None, None, ts + 2),
    ]
    produce(strata.bootstrap, topic_name, recs)
    msgs = consume_all(strata.bootstrap, topic_name, 3)
    assert msgs[0].key() is None and msgs[0].value() == b"no-key"
    assert msgs[0].headers() == [("h1", b"a"), ("h1", b"b"), ("h2", None)]
    assert msgs[0].timestamp() == (1, ts)  # TIMESTAMP_CREATE_TIME
    assert msgs[1].key() == b"k" and msgs[1].value() is None
    assert msgs[2].key() is None and msgs[2].value() is None
    assert msgs[2].timestamp()[1] == ts + 2


def test_offsets_for_times(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    base = 1_600_000_000_000
    produce(strata.bootstrap, topic_name,
            [(None, f"{i}".encode(), None, base + i * 1000) for i in range(50)],
            **{"linger.ms": 50})
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": "times"})
    q = [TopicPartition(topic_name, 0, base + 10_500)]
    assert c.offsets_for_times(q, timeout=10)[0].offset == 11
    q = [TopicPartition(topic_name, 0, base)]
    assert c.offsets_for_times(q, timeout=10)[0].offset == 0
    q = [TopicPartition(topic_name, 0, base + 10_000_000)]
    assert c.offsets_for_times(q, timeout=10)[0].offset == -1  # past the last record
    c.close()


def test_one_mib_messages(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, config={"max.message.bytes": str(2 * 1024 * 1024)})
    big = [(None, bytes([i]) * (1024 * 1024)) for i in range(5)]
    produce(strata.bootstrap, topic_name, big, **{"message.max.bytes": 3 * 1024 * 1024})
    msgs = consume_all(strata.bootstrap, topic_name, 5, **{"fetch.message.max.bytes": 2 * 1024 * 1024})
    assert [m.value() for m in msgs] == [v for _, v in big]


def test_message_over_max_message_bytes_is_refused_and_not_stored(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, config={"max.message.bytes": "10000"})
    reports = produce(strata.bootstrap, topic_name, [(None, b"x" * 50_000)],
                      **{"message.max.bytes": 1_000_000, "retries": 0})
    err = reports[0][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    ok = produce(strata.bootstrap, topic_name, [(None, b"small")])
    assert ok[0][0] is None and ok[0][2] == 0, "the refused record took no offset"
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": "x"})
    assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 1)
    c.close()


def test_timestamps_far_ahead_of_the_broker_are_refused(strata, topic_name):
    """message.timestamp.after.max.ms (an hour by default, as in Kafka 4):
    a record stamped two hours ahead gets INVALID_TIMESTAMP and takes no
    offset; one stamped now, or long ago, is stored; raised per topic, the
    bound lets it through."""
    create_topic(strata.bootstrap, topic_name)
    now = int(time.time() * 1000)
    reports = produce(strata.bootstrap, topic_name, [(None, b"ahead", None, now + 2 * 3_600_000)],
                      retries=0)
    err = reports[0][0]
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, err
    ok = produce(strata.bootstrap, topic_name, [(None, b"now", None, now), (None, b"old", None, 1)])
    assert [r[0] for r in ok] == [None, None] and ok[0][2] == 0, "the refused record took no offset"
    relaxed = f"{topic_name}-relaxed"
    create_topic(strata.bootstrap, relaxed,
                 config={"message.timestamp.after.max.ms": str(3 * 3_600_000)})
    ok = produce(strata.bootstrap, relaxed, [(None, b"ahead", None, now + 2 * 3_600_000)])
    assert ok[0][0] is None


def test_kcat_produce_and_consume(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=2)
    lines = "".join(f"key{i % 4}:value{i}\n" for i in range(100))
    r = subprocess.run(["kcat", "-b", strata.bootstrap, "-t", topic_name, "-P", "-K:", "-z", "lz4"],
                       input=lines, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["kcat", "-b", strata.bootstrap, "-t", topic_name, "-C", "-e",
                        "-o", "beginning", "-f", "%k:%s\n"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = sorted(r.stdout.split())
    assert got == sorted(line for line in lines.split())
    r = subprocess.run(["kcat", "-b", strata.bootstrap, "-L", "-t", topic_name],
                       capture_output=True, text=True, timeout=60)
    assert "2 partitions" in r.stdout, r.stdout


def test_kafka_python_produce_and_consume(strata, topic_name):
    from kafka import KafkaConsumer, KafkaProducer
    create_topic(strata.bootstrap, topic_name, partitions=2)
    # kafka-python 3.x producers are idempotent by default (InitProducerId).
    p = KafkaProducer(bootstrap_servers=strata.bootstrap, acks="all")
    futs = [p.send(topic_name, key=f"k{i % 5}".encode(), value=f"v{i}".encode()) for i in range(100)]
    metas = [f.get(timeout=30) for f in futs]
    assert len({(m.partition, m.offset) for m in metas}) == 100
    p.close()
    c = KafkaConsumer(topic_name, bootstrap_servers=strata.bootstrap, group_id=f"kp-{topic_name}",
                      auto_offset_reset="earliest", consumer_timeout_ms=15000)
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == 100:
            break
    c.close()
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(100))


def test_auto_create_on_metadata(strata, topic_name):
    reports = produce(strata.bootstrap, topic_name, [(None, b"hello")])
    assert reports[0][0] is None
    assert [m.value() for m in consume_all(strata.bootstrap, topic_name, 1)] == [b"hello"]


def test_idempotent_librdkafka_producer(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=2)
    reports = produce(strata.bootstrap, topic_name,
                      [(f"k{i}".encode(), f"{i}".encode()) for i in range(2000)],
                      **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
    assert all(err is None for err, _, _ in reports)
    msgs = consume_all(strata.bootstrap, topic_name, 2000)
    assert sorted(int(m.value()) for m in msgs) == list(range(2000))
