"""Replication (issue 5): replication factor 3 on etcd and three real
brokers, with real clients. The fault suite is in test_faults.py."""
import contextlib
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Etcd, broker_process, metric, segment_bytes, wait_until

FAST = ["--set", "replica_lag_time_max_ms=3000"]


def start_cluster(tmp_path, etcd_endpoints, ids=(1, 2, 3), cluster="repl", extra=(), brokers=None):
    """Starts brokers `ids` into `brokers` (a dict the caller may own, so it
    can stop whatever started even if a later one fails)."""
    brokers = {} if brokers is None else brokers
    for i in ids:
        brokers[i] = broker_process(tmp_path, i, etcd_endpoints, cluster=cluster, extra=[*FAST, *extra])
    for b in brokers.values():
        b.start()
    a = AdminClient({"bootstrap.servers": next(iter(brokers.values())).bootstrap})
    wait_until(lambda: len(a.list_topics(timeout=5).brokers) == len(ids), what="brokers registered")
    return brokers


def stop_all(brokers):
    for b in brokers.values():
        if b.alive():
            b.proc.send_signal(signal.SIGCONT)
            b.stop()
        assert "panicked" not in b.log()


@contextlib.contextmanager
def etcd_and_brokers(tmp_path, ids=(1, 2, 3), cluster="repl", extra=()):
    """A single-member etcd and brokers `ids`, stopped (and checked for
    panics) on the way out."""
    etcd = Etcd(tmp_path).start()
    brokers = {}
    try:
        yield start_cluster(tmp_path, etcd.endpoint, ids, cluster, extra, brokers)
    finally:
        stop_all(brokers)
        etcd.kill()


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
    with etcd_and_brokers(tmp_path) as brokers:
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


def test_acks_all_is_fsynced_only_where_no_follower_holds_it(tmp_path):
    """Decision 0015: `strata broker` acknowledges an acks=all write once
    every in-sync replica has it, without an fsync, unless the leader is
    the partition's only in-sync replica (then it fsyncs, as `strata dev`
    does every one). Before, it fsynced every acks=all write."""
    with etcd_and_brokers(tmp_path) as brokers:
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        fs = a.create_topics([NewTopic("rf3", num_partitions=1, replication_factor=3),
                              NewTopic("rf1", num_partitions=1, replication_factor=1)])
        for f in fs.values():
            f.result(30)
        wait_full_isr(brokers, "rf3")
        wait_full_isr(brokers, "rf1", n=1)

        def flushes():
            return sum(metric(b, "strata_log_flushes_total") for b in brokers.values())

        p = Producer({"bootstrap.servers": bootstrap(brokers), "acks": "all", "linger.ms": 0})

        def send(topic, n):
            # One produce request each: delivered before the next is sent.
            for i in range(n):
                p.produce(topic, value=b"%d" % i)
                assert p.flush(30) == 0
        before = flushes()
        send("rf3", 20)
        assert flushes() == before, "acks=all writes held by two followers were fsynced"
        send("rf1", 20)
        assert flushes() - before == 20, "an acks=all write on one replica only was not fsynced"
        assert [v for _, v in read_all(bootstrap(brokers), "rf3", 1)[0]] == [b"%d" % i for i in range(20)]


def test_sigterm_hands_leadership_over_before_exiting(tmp_path):
    with etcd_and_brokers(tmp_path) as brokers:
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


def test_reassignment_moves_a_replica_copying_only_the_hot_tail(tmp_path):
    from conftest import strata_cli
    shared = f"file://{tmp_path}/objects"
    with etcd_and_brokers(tmp_path, ids=(1, 2, 3, 4), cluster="moves",
                          extra=["--object-store", shared,
                                 "--set", "retention_check_interval_ms=500"]) as brokers:
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        a.create_topics([NewTopic("moves", num_partitions=1, replication_factor=3, config={
            "min.insync.replicas": "2", "segment.bytes": "65536",
            "local.retention.bytes": "131072"})])["moves"].result(30)
        wait_full_isr(brokers, "moves")
        p = Producer({"bootstrap.servers": bootstrap(brokers), "acks": "all", "linger.ms": 5,
                      "batch.size": 16384})
        value = b"x" * 500
        for i in range(4000):
            p.produce("moves", key=b"%d" % i, value=value)
        assert p.flush(60) == 0
        md = partition_md(brokers, "moves")[0]
        old_leader, replicas = md.leader, list(md.replicas)
        newcomer = next(i for i in brokers if i not in replicas)
        leader_dir = tmp_path / f"broker-{old_leader}" / "logs" / "moves-0"
        # History goes cold and leaves the leader's disk.
        wait_until(lambda: 0 < segment_bytes(leader_dir) < 600_000, timeout=60,
                   what="offload to trim the leader's local log")
        keep = [r for r in replicas if r != old_leader]
        target = [newcomer, *keep]
        r = strata_cli("topic", "reassign", "--bootstrap", bootstrap(brokers), "--topic", "moves",
                       "--partition", "0", "--replicas", ",".join(map(str, target)), "--wait",
                       "--timeout-secs", "30")
        d = strata_cli("topic", "describe", "--bootstrap", bootstrap(brokers), "--topic", "moves")
        assert r.returncode == 0, r.stderr + d.stdout + d.stderr
        assert "moved moves-0" in r.stdout, r.stdout
        md = partition_md(brokers, "moves")[0]
        assert (md.leader, list(md.replicas)) == (newcomer, target)
        # The old leader dropped its copy; the newcomer holds only the hot tail.
        wait_until(lambda: not leader_dir.exists(), timeout=30, what="removed replica's files deleted")
        new_dir = tmp_path / f"broker-{newcomer}" / "logs" / "moves-0"
        assert 0 < segment_bytes(new_dir) < 600_000, segment_bytes(new_dir)
        got = read_all(bootstrap(brokers), "moves", 1)
        assert [v for _, v in got[0]] == [value] * 4000
        # Draining the new leader moves its replica (and leadership) to the
        # one broker left out, the old leader.
        r = strata_cli("cluster", "drain", "--bootstrap", bootstrap(brokers), "--broker",
                       str(newcomer), "--wait", "--timeout-secs", "60")
        assert r.returncode == 0, r.stderr
        md = partition_md(brokers, "moves")[0]
        assert newcomer not in md.replicas and old_leader in md.replicas, md.replicas
        assert md.leader == keep[0]
        wait_until(lambda: not new_dir.exists(), timeout=30, what="drained replica's files deleted")
        got = read_all(bootstrap(brokers), "moves", 1)
        assert [v for _, v in got[0]] == [value] * 4000
