"""The cluster profile: a real etcd and three `strata broker` processes."""
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Etcd, broker_process, create_topic, wait_until


@pytest.fixture
def cluster(tmp_path):
    etcd = Etcd(tmp_path).start()
    brokers = [broker_process(tmp_path, i, etcd.endpoint) for i in (1, 2, 3)]
    for b in brokers:
        b.start()
    # Every broker sees all three.
    a = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
    wait_until(lambda: len(a.list_topics(timeout=5).brokers) == 3, what="3 brokers registered")
    yield etcd, brokers
    for b in brokers:
        if b.alive():
            b.stop()
        assert "panicked" not in b.log()
    etcd.kill()


def bootstrap_all(brokers):
    return ",".join(b.bootstrap for b in brokers if b.alive())


def produce(bootstrap, topic, values):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    errs = []
    for v in values:
        p.produce(topic, value=v, on_delivery=lambda e, m: errs.append(e))
    assert p.flush(60) == 0
    assert errs == [None] * len(values), [e for e in errs if e]


def consume(bootstrap, topic, n, group=None, timeout=60, commit=False):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group or f"r-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append(m.value())
    if commit and out:
        c.commit(asynchronous=False)
    c.close()
    return out


def test_topic_created_through_one_broker_is_visible_and_writable_through_the_others(cluster):
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "shared", partitions=6)
    for b in brokers[1:]:
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
        t = md.topics["shared"]
        assert len(t.partitions) == 6
        leaders = {p.leader for p in t.partitions.values()}
        assert leaders == {1, 2, 3}, f"partitions spread over the brokers: {leaders}"
    # Bootstrapping from broker 3 only, the client writes to every leader.
    values = [f"v{i}".encode() for i in range(600)]
    produce(brokers[2].bootstrap, "shared", values)
    got = consume(brokers[1].bootstrap, "shared", 600)
    assert sorted(got) == sorted(values)


def test_etcd_holds_the_design_layout(cluster):
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "layout", partitions=2)
    produce(brokers[0].bootstrap, "layout", [b"x"] * 10)
    consume(brokers[0].bootstrap, "layout", 10, group="layout-group", commit=True)
    keys = set(etcd.ctl("get", "--prefix", "/strata/", "--keys-only").split())
    root = "/strata/e2e/"
    for k in [f"{root}brokers/1", f"{root}brokers/2", f"{root}brokers/3",
              f"{root}topics/layout",
              f"{root}partitions/layout/0/state", f"{root}partitions/layout/0/leader",
              f"{root}partitions/layout/1/state", f"{root}partitions/layout/1/leader",
              f"{root}groups/layout-group/coordinator",
              f"{root}groups/layout-group/offsets/layout/0",
              f"{root}cluster_id"]:
        assert k in keys, f"{k} missing from {sorted(keys)}"


def test_restarting_every_broker_loses_no_topic_config_or_offset(cluster):
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "durable", partitions=3, config={"retention.ms": "86400000"})
    values = [f"d{i}".encode() for i in range(300)]
    produce(bootstrap_all(brokers), "durable", values)
    group = "durable-group"
    c = Consumer({"bootstrap.servers": bootstrap_all(brokers), "group.id": group})
    c.commit(offsets=[TopicPartition("durable", p, 10 + p) for p in range(3)], asynchronous=False)
    c.close()
    for b in brokers:
        assert b.stop() == 0
    for b in brokers:
        b.start()
    bs = bootstrap_all(brokers)
    a = AdminClient({"bootstrap.servers": bs})
    wait_until(lambda: all(p.leader >= 0 for p in a.list_topics(timeout=5).topics["durable"].partitions.values()),
               what="leaders after restart")
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, "durable")
    assert a.describe_configs([res])[res].result(timeout=10)["retention.ms"].value == "86400000"
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    got = c.committed([TopicPartition("durable", p) for p in range(3)], timeout=30)
    assert [tp.offset for tp in got] == [10, 11, 12]
    c.close()
    assert sorted(consume(bs, "durable", 300)) == sorted(values)


def test_group_survives_kill_of_its_coordinator(cluster):
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "groups", partitions=6)
    produce(bootstrap_all(brokers), "groups", [f"{i}".encode() for i in range(600)])
    group = "survivor"
    bs = bootstrap_all(brokers)
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500})
    c.subscribe(["groups"])
    seen = set()
    position = {}

    def poll_into(target, limit):
        end = time.time() + limit
        while len(seen) < target and time.time() < end:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen.add(int(m.value()))
                position[m.partition()] = max(position.get(m.partition(), 0), m.offset() + 1)

    poll_into(300, 60)
    c.commit(asynchronous=False)
    committed_before = {tp.partition: tp.offset for tp in
                        c.committed([TopicPartition("groups", p) for p in range(6)], timeout=10)}
    coord = int(etcd.ctl("get", "/strata/e2e/groups/survivor/coordinator", "--print-value-only")
                .split('"broker":')[1].split("}")[0])
    victim = next(b for b, i in zip(brokers, (1, 2, 3)) if i == coord)
    victim.kill9()
    # The coordinator key expires with the victim's lease; another broker takes over.
    wait_until(lambda: f'"broker":{coord}' not in etcd.ctl(
        "get", "/strata/e2e/groups/survivor/coordinator", "--print-value-only"), timeout=30,
        what="coordinator key to move")
    # Restart the victim so its partitions (one replica each) come back.
    victim.start()
    poll_into(600, 90)
    assert seen == set(range(600)), f"missing {sorted(set(range(600)) - seen)[:20]}"
    # The consumer may still be rejoining the new coordinator: a commit then
    # gets a retriable group error, as with Kafka; retry while polling.
    from confluent_kafka import KafkaException
    deadline = time.time() + 30
    final = [TopicPartition("groups", p, o) for p, o in sorted(position.items())]
    while True:
        try:
            c.commit(offsets=final, asynchronous=False)
            break
        except KafkaException:
            assert time.time() < deadline, "commit kept failing after the coordinator moved"
            c.poll(0.5)
    after = {tp.partition: tp.offset for tp in
             c.committed([TopicPartition("groups", p) for p in range(6)], timeout=10)}
    for p, o in committed_before.items():
        assert after[p] >= o, "committed offsets never go back"
    assert sum(o for o in after.values() if o >= 0) == 600, after
    c.close()
    new_coord = etcd.ctl("get", "/strata/e2e/groups/survivor/coordinator", "--print-value-only")
    assert new_coord.strip(), "a live broker coordinates the group"
