"""The cluster profile: a real etcd and three `strata broker` processes."""
import os
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from conftest import Etcd, broker_process, create_topic, metric, wait_until


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


def produce(bootstrap, topic, values, partitions=None):
    """Null-key values, to the partitions the client picks (one sticky
    partition per linger, often the same one for a few records), or round
    robin over `partitions`."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    errs = []
    for i, v in enumerate(values):
        at = {"partition": partitions[i % len(partitions)]} if partitions else {}
        p.produce(topic, value=v, on_delivery=lambda e, m: errs.append(e), **at)
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


def test_topics_and_commits_wider_than_an_etcd_transaction(cluster):
    """etcd takes at most 128 operations per transaction (its default
    --max-txn-ops): a topic of 300 partitions, grown to 400, and a group
    committing all 400 offsets at once each needed more."""
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "wide", partitions=300)
    a = AdminClient({"bootstrap.servers": brokers[1].bootstrap})
    fs = a.create_partitions([NewPartitions("wide", 400)])
    fs["wide"].result(timeout=60)

    def all_led():
        t = a.list_topics("wide", timeout=10).topics["wide"]
        return len(t.partitions) == 400 and all(p.leader >= 0 for p in t.partitions.values())
    wait_until(all_led, timeout=60, what="400 partitions with leaders")
    values = [f"v{i}".encode() for i in range(400)]
    produce(bootstrap_all(brokers), "wide", values, partitions=list(range(400)))
    got = consume(bootstrap_all(brokers), "wide", 400, group="wide-readers", commit=True)
    assert sorted(got) == sorted(values)
    c = Consumer({"bootstrap.servers": brokers[2].bootstrap, "group.id": "wide-readers"})
    committed = c.committed([TopicPartition("wide", p) for p in range(400)], timeout=30)
    c.close()
    assert [tp.offset for tp in committed] == [1] * 400


def test_etcd_holds_the_design_layout(cluster):
    etcd, brokers = cluster
    create_topic(brokers[0].bootstrap, "layout", partitions=2)
    # Records in both partitions, so the group commits an offset for each.
    produce(brokers[0].bootstrap, "layout", [b"x"] * 10, partitions=[0, 1])
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


def test_brokers_keep_working_when_an_etcd_member_dies(tmp_path):
    members = [Etcd(tmp_path, name=f"m{i}") for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.start(initial_cluster=initial, wait=False)
    for m in members:
        m.wait_ready()
    endpoints = ",".join(m.endpoint for m in members)
    brokers = [broker_process(tmp_path, i, endpoints, cluster="ha") for i in (1, 2)]
    try:
        for b in brokers:
            b.start()
        bs = bootstrap_all(brokers)
        create_topic(brokers[0].bootstrap, "ha", partitions=4)
        produce(bs, "ha", [f"a{i}".encode() for i in range(200)])
        members[0].kill()
        # Well past a session TTL (3 s): leases are renewed through the others.
        deadline = time.time() + 8
        batch = 0
        while time.time() < deadline:
            produce(bs, "ha", [f"b{batch}-{i}".encode() for i in range(50)])
            batch += 1
            time.sleep(0.5)
        group = "ha-group"
        got = consume(bs, "ha", 200 + 50 * batch, group=group, commit=True)
        assert len(got) == 200 + 50 * batch
        c = Consumer({"bootstrap.servers": bs, "group.id": group})
        committed = c.committed([TopicPartition("ha", p) for p in range(4)], timeout=30)
        c.close()
        assert sum(tp.offset for tp in committed if tp.offset >= 0) == len(got)
        for b in brokers:
            assert b.alive(), b.log()[-2000:]
    finally:
        for b in brokers:
            if b.alive():
                b.stop()
        for m in members:
            m.kill()


def produce_errors(b):
    return metric(b, "strata_produce_errors_total")


def test_etcd_outage_refuses_writes_then_resumes_without_loss(tmp_path):
    etcd = Etcd(tmp_path).start()
    b = broker_process(tmp_path, 1, etcd.endpoint, cluster="outage")
    try:
        b.start()
        create_topic(b.bootstrap, "outage", partitions=2)
        produce(b.bootstrap, "outage", [f"before{i}".encode() for i in range(100)])
        etcd.kill()
        time.sleep(3)  # past 3/4 of the 3 s session TTL: the broker fences itself
        refused_before = produce_errors(b)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all",
                      "message.timeout.ms": 2000})
        errs = []
        p.produce("outage", value=b"during", on_delivery=lambda e, m: errs.append(e))
        p.flush(10)
        assert len(errs) == 1 and errs[0] is not None, "no write may be acknowledged while fenced"
        # The broker refused every attempt (the client retried until its timeout).
        assert produce_errors(b) > refused_before
        # etcd comes back with its data; the broker renews its session and resumes.
        etcd.start()
        produce(b.bootstrap, "outage", [f"after{i}".encode() for i in range(100)])
        got = consume(b.bootstrap, "outage", 200)
        assert sorted(got) == sorted([f"before{i}".encode() for i in range(100)] +
                                     [f"after{i}".encode() for i in range(100)])
        assert b.alive()
    finally:
        if b.alive():
            b.stop()
        etcd.kill()


def test_broker_waits_for_etcd_at_start(tmp_path):
    import threading
    etcd = Etcd(tmp_path)  # not started yet
    b = broker_process(tmp_path, 1, etcd.endpoint, cluster="late")
    starter = threading.Timer(3.0, lambda: etcd.start(wait=False))
    starter.start()
    try:
        b.start(timeout=60)  # returns once the broker listens, i.e. after etcd came up
        log = b.log()
        assert "cannot reach etcd; retrying" in log or "etcd not ready; retrying" in log, log[-2000:]
        create_topic(b.bootstrap, "late", partitions=1)
        produce(b.bootstrap, "late", [b"x"])
        assert consume(b.bootstrap, "late", 1) == [b"x"]
    finally:
        starter.cancel()
        if b.alive():
            b.stop()
        etcd.kill()


def history_compacted(etcd, revision):
    """Whether etcd has compacted away `revision` (a read at it fails so)."""
    r = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "get", "--rev", str(revision),
                        "/strata/"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "ETCDCTL_API": "3"})
    return r.returncode != 0 and "compacted" in r.stderr


def test_brokers_compact_the_etcd_history_behind_them(tmp_path):
    """A stock etcd keeps every revision (each offset commit is one) until it
    is compacted, and past its backend quota refuses every write. Brokers
    compact it behind their view; they, and a broker joining later, work on."""
    etcd = Etcd(tmp_path).start()
    fast = ["--set", "metadata_compaction_interval_ms=1000"]
    b1 = broker_process(tmp_path, 1, etcd.endpoint, cluster="compact", extra=fast)
    b2 = broker_process(tmp_path, 2, etcd.endpoint, cluster="compact", extra=fast)
    try:
        b1.start()
        create_topic(b1.bootstrap, "compact", partitions=2)
        produce(b1.bootstrap, "compact", [f"a{i}".encode() for i in range(50)])
        assert len(consume(b1.bootstrap, "compact", 50, group="g", commit=True)) == 50
        assert not history_compacted(etcd, 2)
        wait_until(lambda: history_compacted(etcd, 2), timeout=30, what="etcd history compacted")
        b2.start()
        a = AdminClient({"bootstrap.servers": b1.bootstrap})
        wait_until(lambda: len(a.list_topics(timeout=5).brokers) == 2, what="2 brokers registered")
        produce(bootstrap_all([b1, b2]), "compact", [f"b{i}".encode() for i in range(50)])
        # The group's committed offsets survived: it reads only the new records.
        got = consume(b2.bootstrap, "compact", 50, group="g", commit=True)
        assert sorted(got) == sorted(f"b{i}".encode() for i in range(50))
        assert b1.alive() and b2.alive()
    finally:
        for b in (b1, b2):
            if b.alive():
                b.stop()
            assert "panicked" not in b.log()
        etcd.kill()


def test_a_topic_created_again_never_serves_the_deleted_ones_records(tmp_path):
    """A broker down while a topic is deleted keeps its directories; when a
    topic of the same name places replicas there, it must not serve the old
    records as the new topic's (before: 500 old records from the partition
    the restarted broker led)."""
    etcd = Etcd(tmp_path).start()
    b1, b2 = (broker_process(tmp_path, i, etcd.endpoint, cluster="again") for i in (1, 2))
    try:
        b1.start()
        b2.start()
        a = AdminClient({"bootstrap.servers": b1.bootstrap})
        wait_until(lambda: len(a.list_topics(timeout=5).brokers) == 2, what="2 brokers registered")
        a.create_topics([NewTopic("again", 2, 2)])["again"].result(10)
        produce(b1.bootstrap, "again", [f"old{i}".encode() for i in range(200)], partitions=[0, 1])
        b2.kill9()
        # A fresh client, whose controller is broker 1: `a` may have last
        # read the cluster's metadata from broker 2 (each broker names
        # itself the controller) and would send the deletion to the dead
        # broker, which fails at once, as with a dead controller in Kafka.
        fresh = AdminClient({"bootstrap.servers": b1.bootstrap})
        fresh.delete_topics(["again"])["again"].result(10)
        b2.start()
        wait_until(lambda: len(a.list_topics(timeout=5).brokers) == 2, what="broker 2 back")
        a.create_topics([NewTopic("again", 2, 2)])["again"].result(10)
        leaders = {p.leader for p in a.list_topics(timeout=5).topics["again"].partitions.values()}
        assert leaders == {1, 2}, leaders
        produce(b1.bootstrap, "again", [f"new{i}".encode() for i in range(10)], partitions=[0, 1])
        c = Consumer({"bootstrap.servers": b1.bootstrap, "group.id": "again-reader",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("again", p, 0) for p in (0, 1)])
        got, deadline = [], time.time() + 5
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
        c.close()
        assert sorted(got) == sorted(f"new{i}".encode() for i in range(10)), got[:5]
        assert "a deleted topic of the same name" in b2.log()
    finally:
        for b in (b1, b2):
            if b.alive():
                b.stop()
        etcd.kill()


def test_a_data_directory_is_not_taken_for_another_clusters(tmp_path):
    """A broker pointed at another cluster's metadata (here a mistyped
    --cluster name, which holds none) refuses to start, naming both,
    instead of taking its directories for the other cluster's."""
    etcd = Etcd(tmp_path).start()
    b = broker_process(tmp_path, 1, etcd.endpoint, cluster="home")
    try:
        b.start()
        create_topic(b.bootstrap, "mine", partitions=1)
        produce(b.bootstrap, "mine", [b"kept"])
        b.stop()
        b.mode[b.mode.index("home")] = "hom"
        with pytest.raises(RuntimeError) as e:
            b.start()
        assert "holds replicas of cluster" in str(e.value) and "has no cluster" in str(e.value)
        b.mode[b.mode.index("hom")] = "home"
        b.start()
        assert consume(b.bootstrap, "mine", 1) == [b"kept"]
    finally:
        if b.alive():
            b.stop()
        etcd.kill()
