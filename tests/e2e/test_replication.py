"""Replication (issue 5): replication factor 3 on etcd and three real
brokers, with real clients. The fault suite is in test_faults.py."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Etcd, broker_process, wait_until

FAST = ["--set", "replica_lag_time_max_ms=3000"]


def start_cluster(tmp_path, etcd_endpoints, ids=(1, 2, 3), cluster="repl"):
    brokers = {i: broker_process(tmp_path, i, etcd_endpoints, cluster=cluster, extra=FAST) for i in ids}
    for b in brokers.values():
        b.start()
    a = AdminClient({"bootstrap.servers": next(iter(brokers.values())).bootstrap})
    wait_until(lambda: len(a.list_topics(timeout=5).brokers) == len(ids), what="brokers registered")
    return brokers


def bootstrap(brokers):
    return ",".join(b.bootstrap for b in brokers.values() if b.alive())


def partition_md(brokers, topic):
    a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    return a.list_topics(topic, timeout=10).topics[topic].partitions


def wait_full_isr(brokers, topic, n=3, timeout=60):
    def full():
        try:
            parts = partition_md(brokers, topic)
        except Exception:
            return False
        return parts and all(p.leader >= 0 and len(p.isrs) == n for p in parts.values())
    wait_until(full, timeout=timeout, interval=0.2, what=f"ISR of {topic} to have {n} members")


def read_all(bs, topic, partitions, timeout=60):
    """Every record of every partition up to the high watermark, in order."""
    c = Consumer({"bootstrap.servers": bs, "group.id": f"check-{time.time()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    out = {}
    try:
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            c.assign([TopicPartition(topic, p, lo)])
            got = []
            deadline = time.time() + timeout
            while (not got or got[-1][0] < hi - 1) and hi > lo and time.time() < deadline:
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    got.append((m.offset(), m.value()))
            assert hi == lo or got[-1][0] == hi - 1, f"partition {p}: read to {got[-1:]} of {hi}"
            out[p] = got
    finally:
        c.close()
    return out


def test_replication_factor_3_keeps_every_acknowledged_record_when_the_leader_dies(tmp_path):
    etcd = Etcd(tmp_path).start()
    brokers = start_cluster(tmp_path, etcd.endpoint)
    try:
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        a.create_topics([NewTopic("r3", num_partitions=2, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])["r3"].result(30)
        wait_full_isr(brokers, "r3")
        parts = partition_md(brokers, "r3")
        assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values())
        p = Producer({"bootstrap.servers": bootstrap(brokers), "acks": "all",
                      "enable.idempotence": True, "linger.ms": 2})
        for i in range(2000):
            p.produce("r3", value=b"%d" % i, partition=i % 2)
        assert p.flush(60) == 0
        # Every replica has every record: kill the leader of partition 0.
        leader = parts[0].leader
        brokers[leader].kill9()
        wait_until(lambda: partition_md(brokers, "r3")[0].leader not in (-1, leader), timeout=30,
                   what="a new leader for r3-0")
        for i in range(2000, 3000):
            p.produce("r3", value=b"%d" % i, partition=i % 2)
        assert p.flush(60) == 0
        got = read_all(bootstrap(brokers), "r3", 2)
        for part in (0, 1):
            values = [int(v) for _, v in got[part]]
            assert values == list(range(part, 3000, 2)), f"partition {part}"
        # The killed broker comes back as a follower, truncates and catches up.
        brokers[leader].start()
        wait_full_isr(brokers, "r3")
    finally:
        for b in brokers.values():
            if b.alive():
                b.stop()
            assert "panicked" not in b.log()
        etcd.kill()


def test_sigterm_hands_leadership_over_before_exiting(tmp_path):
    etcd = Etcd(tmp_path).start()
    brokers = start_cluster(tmp_path, etcd.endpoint)
    try:
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        a.create_topics([NewTopic("term", num_partitions=1, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])["term"].result(30)
        wait_full_isr(brokers, "term")
        # acks=1: acknowledged by the leader alone; a graceful stop must not
        # lose them either.
        p = Producer({"bootstrap.servers": bootstrap(brokers), "acks": "1", "linger.ms": 5})
        for i in range(5000):
            p.produce("term", value=b"%d" % i)
        assert p.flush(60) == 0
        leader = partition_md(brokers, "term")[0].leader
        t0 = time.time()
        assert brokers[leader].stop() == 0
        new = wait_until(lambda: partition_md(brokers, "term")[0].leader not in (-1, leader) and
                         partition_md(brokers, "term")[0].leader, timeout=30, interval=0.05,
                         what="a new leader after SIGTERM")
        took = time.time() - t0
        # Without a handover, clients would wait for the 3 s lease to expire.
        assert took < 2.5, f"leadership moved {took:.2f}s after SIGTERM"
        got = read_all(bootstrap(brokers), "term", 1)
        assert [int(v) for _, v in got[0]] == list(range(5000)), f"leader {new} lacks records"
    finally:
        for b in brokers.values():
            if b.alive():
                b.stop()
            assert "panicked" not in b.log()
        etcd.kill()
