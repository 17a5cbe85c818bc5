"""The fault suite (issue 5): etcd plus three brokers on loopback; an
idempotent acks=all producer writes numbered records to a topic with
replication factor 3 and min.insync.replicas=2 while the current leader is
`kill -9`ed (and restarted) again and again, and a leader is SIGSTOPped past
its lease TTL and resumed. At the end every acknowledged record must be read
back exactly once, in order per partition; the suite prints
`acknowledged N, lost 0, duplicated 0`.

`STRATA_FAULT_KILLS=N` sets the number of kills (default 10); run with a
larger N outside CI for a longer version, e.g.
`STRATA_FAULT_KILLS=100 python3 -m pytest tests/e2e/test_faults.py -s`.
"""
import os
import signal
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Etcd, wait_until
from test_replication import (bootstrap, partition_md, read_all, start_cluster, stop_all,
                              wait_full_isr)

TOPIC = "faults"
PARTITIONS = 3
KILLS = int(os.environ.get("STRATA_FAULT_KILLS", "10"))
SESSION_TTL_S = 3  # conftest's broker_process sets session_timeout_ms=3000


class NumberedProducer(threading.Thread):
    """Produces 0, 1, 2, ... until stopped; records what was acknowledged."""

    def __init__(self, bs, rate=400):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True,
                           "linger.ms": 5, "message.timeout.ms": 120000,
                           "topic.metadata.refresh.interval.ms": 1000,
                           "retry.backoff.ms": 50, "reconnect.backoff.max.ms": 1000})
        self.rate = rate
        self.stop_flag = threading.Event()
        self.acked = {}  # value -> (partition, offset)
        self.failed = []
        self.sent = 0

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked[int(msg.value())] = (msg.partition(), msg.offset())
        else:
            self.failed.append((int(msg.value()), str(err)))

    def run(self):
        interval = 1.0 / self.rate
        nxt = time.time()
        while not self.stop_flag.is_set():
            try:
                self.p.produce(TOPIC, value=b"%d" % self.sent, on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0)
            nxt += interval
            time.sleep(max(0.0, nxt - time.time()))
        self.p.flush(150)


def leader_of(brokers, p=0):
    try:
        return partition_md(brokers, TOPIC)[p].leader
    except Exception:
        return -1


def run_faults(tmp_path, etcd_endpoints, on_round=None):
    brokers = {}
    producer = None
    try:
        start_cluster(tmp_path, etcd_endpoints, cluster="faults", brokers=brokers)
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        a.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[TOPIC].result(30)
        wait_full_isr(brokers, TOPIC)
        producer = NumberedProducer(",".join(b.bootstrap for b in brokers.values()))
        producer.start()
        wait_until(lambda: len(producer.acked) > 200, timeout=30, what="first acknowledgements")
        for round_ in range(KILLS):
            wait_full_isr(brokers, TOPIC, timeout=90)
            victim = leader_of(brokers)
            assert victim in brokers, f"no leader for {TOPIC}-0"
            before = len(producer.acked)
            brokers[victim].kill9()
            wait_until(lambda: leader_of(brokers) not in (-1, victim), timeout=30,
                       what=f"round {round_}: a new leader after killing broker {victim}")
            brokers[victim].start()
            wait_until(lambda: len(producer.acked) > before + 100, timeout=60,
                       what=f"round {round_}: acknowledgements after failover")
            if on_round:
                on_round(round_)
        # A leader paused past its lease TTL, then resumed.
        wait_full_isr(brokers, TOPIC, timeout=90)
        victim = leader_of(brokers)
        brokers[victim].proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: leader_of(brokers) not in (-1, victim), timeout=30,
                       what="a new leader while the old one is paused")
            time.sleep(SESSION_TTL_S)
        finally:
            brokers[victim].proc.send_signal(signal.SIGCONT)
        before = len(producer.acked)
        wait_until(lambda: len(producer.acked) > before + 200, timeout=60,
                   what="acknowledgements after the paused leader resumed")
        wait_full_isr(brokers, TOPIC, timeout=90)
        producer.stop_flag.set()
        producer.join(180)
        assert not producer.is_alive(), "producer did not finish flushing"
        got = read_all(bootstrap(brokers), TOPIC, PARTITIONS, timeout=120)
        seen = {}
        duplicated = 0
        for part, records in got.items():
            values = [int(v) for _, v in records]
            assert values == sorted(values), f"partition {part} out of order"
            for off, v in records:
                if int(v) in seen:
                    duplicated += 1
                seen[int(v)] = (part, off)
        lost = [v for v in producer.acked if v not in seen]
        moved = [v for v, where in producer.acked.items() if v in seen and seen[v] != where]
        print(f"acknowledged {len(producer.acked)}, lost {len(lost)}, duplicated {duplicated}"
              f" (sent {producer.sent}, failed {len(producer.failed)}, kills {KILLS})")
        assert not lost, f"lost acknowledged records, e.g. {sorted(lost)[:10]}"
        assert duplicated == 0
        assert not moved, f"records read at other offsets than acknowledged: {moved[:10]}"
        assert len(producer.acked) > 1000
    finally:
        if producer is not None and producer.is_alive():
            producer.stop_flag.set()
        stop_all(brokers)


def test_kill9_and_pause_leaders_lose_and_duplicate_nothing(tmp_path):
    etcd = Etcd(tmp_path).start()
    try:
        run_faults(tmp_path, etcd.endpoint)
    finally:
        etcd.kill()


def test_the_same_with_a_three_member_etcd_losing_a_member(tmp_path):
    members = [Etcd(tmp_path, name=f"m{i}") for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.start(initial_cluster=initial, wait=False)
    try:
        for m in members:
            m.wait_ready()

        def lose_a_member(round_):
            if round_ == KILLS // 2:
                members[0].kill()

        run_faults(tmp_path, ",".join(m.endpoint for m in members), on_round=lose_a_member)
        assert members[0].proc.poll() is not None, "the member was lost mid-run"
    finally:
        for m in members:
            m.kill()
