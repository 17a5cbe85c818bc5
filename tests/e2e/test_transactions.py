"""Transactions with librdkafka (confluent-kafka): commit and abort,
read_committed against read_uncommitted, consume-transform-produce with
send_offsets_to_transaction, zombie fencing, kill -9 of the broker while
transactions run, and an idempotent producer whose connections are cut."""
import random
import re
import socket
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import Strata, create_topic, free_port, wait_until


def txn_producer(bootstrap, txn_id, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def read_values(bootstrap, topic, partitions, isolation, expected=None, timeout=20):
    """Every value of `topic` from offset 0, as a read_committed or
    read_uncommitted consumer sees it; stops at `expected` values or when
    the consumer has reached the end of every partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{time.time()}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                if expected is None and len(eof) == partitions:
                    break
                continue
            raise KafkaException(m.error())
        eof.discard(m.partition())
        out.append(m.value().decode())
        if expected is not None and len(out) >= expected:
            break
    c.close()
    return out


def wait_stable(bootstrap, topic, partitions, timeout=60):
    """Waits until no transaction holds `topic` back: each partition's last
    stable offset (a read_committed consumer's high watermark) equals its
    high watermark, so reading to the end sees every decided transaction."""
    committed = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lso-{time.time()}",
                          "isolation.level": "read_committed"})
    uncommitted = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{time.time()}",
                            "isolation.level": "read_uncommitted"})

    def stable():
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            lso = committed.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            hw = uncommitted.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            if lso != hw:
                return False
        return True

    try:
        wait_until(stable, timeout=timeout, interval=0.2, what=f"{topic} to have no open transaction")
    finally:
        committed.close()
        uncommitted.close()


def test_commit_and_abort_with_both_isolation_levels(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=3)
    p = txn_producer(strata.bootstrap, f"tx-{topic_name}")
    p.begin_transaction()
    for i in range(30):
        p.produce(topic_name, value=f"aborted-{i}".encode(), partition=i % 3)
    # The aborted records reach the log before the abort.
    assert p.flush(30) == 0
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(30):
        p.produce(topic_name, value=f"committed-{i}".encode(), partition=i % 3)
    p.commit_transaction(30)

    committed = read_values(strata.bootstrap, topic_name, 3, "read_committed")
    assert sorted(committed) == sorted(f"committed-{i}" for i in range(30))
    everything = read_values(strata.bootstrap, topic_name, 3, "read_uncommitted")
    assert sorted(everything) == sorted([f"aborted-{i}" for i in range(30)]
                                        + [f"committed-{i}" for i in range(30)])


def test_open_transaction_holds_read_committed_back_until_it_commits(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=1)
    p = txn_producer(strata.bootstrap, f"tx-{topic_name}")
    plain = Producer({"bootstrap.servers": strata.bootstrap})
    p.begin_transaction()
    p.produce(topic_name, value=b"in-txn")
    assert p.flush(30) == 0
    # A non-transactional record after the open transaction's first record
    # is not visible to read_committed until the transaction ends.
    plain.produce(topic_name, value=b"plain")
    assert plain.flush(30) == 0
    assert read_values(strata.bootstrap, topic_name, 1, "read_committed", timeout=3) == []
    assert read_values(strata.bootstrap, topic_name, 1, "read_uncommitted") == ["in-txn", "plain"]
    p.commit_transaction(30)
    assert read_values(strata.bootstrap, topic_name, 1, "read_committed") == ["in-txn", "plain"]


def test_consume_transform_produce_is_exactly_once(strata, topic_name):
    src, dst, group = f"{topic_name}-in", f"{topic_name}-out", f"g-{topic_name}"
    create_topic(strata.bootstrap, src, partitions=2)
    create_topic(strata.bootstrap, dst, partitions=2)
    n = 400
    plain = Producer({"bootstrap.servers": strata.bootstrap, "enable.idempotence": True})
    for i in range(n):
        plain.produce(src, value=str(i).encode(), partition=i % 2)
    assert plain.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([src])
    producer = txn_producer(strata.bootstrap, f"tx-{topic_name}")
    done, rounds, aborted_once = 0, 0, False
    deadline = time.time() + 90
    while done < n and time.time() < deadline:
        msgs = [m for m in consumer.consume(50, 1.0) if m.error() is None]
        if not msgs:
            continue
        rounds += 1
        producer.begin_transaction()
        for m in msgs:
            producer.produce(dst, value=f"out-{m.value().decode()}".encode(),
                             partition=m.partition())
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        if rounds == 3 and not aborted_once:
            # Abort one batch half-way: its output must never be seen and
            # its input must be processed again.
            aborted_once = True
            assert producer.flush(30) == 0
            producer.abort_transaction(30)
            committed = consumer.committed(list(consumer.assignment()), 30)
            for tp in committed:
                consumer.seek(TopicPartition(tp.topic, tp.partition,
                                             tp.offset if tp.offset >= 0 else 0))
            continue
        producer.commit_transaction(30)
        done += len(msgs)
    consumer.close()
    assert aborted_once and done == n, f"processed {done} of {n}"

    out = read_values(strata.bootstrap, dst, 2, "read_committed")
    assert sorted(out) == sorted(f"out-{i}" for i in range(n)), "each input exactly once"
    # The group's committed offsets are the end of the input.
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], 30)
    c.close()
    assert sum(tp.offset for tp in committed) == n


def test_zombie_producer_is_fenced(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=2)
    txn_id = f"tx-{topic_name}"
    zombie = txn_producer(strata.bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic_name, value=b"zombie-1", partition=0)
    assert zombie.flush(30) == 0
    # A new instance with the same transactional.id fences the old one and
    # aborts its open transaction.
    fresh = txn_producer(strata.bootstrap, txn_id)
    fresh.begin_transaction()
    fresh.produce(topic_name, value=b"fresh", partition=1)
    fresh.commit_transaction(30)

    with pytest.raises(KafkaException) as e:
        zombie.produce(topic_name, value=b"zombie-2", partition=0)
        zombie.flush(10)
        zombie.commit_transaction(10)
    err = e.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err
    assert read_values(strata.bootstrap, topic_name, 2, "read_committed") == ["fresh"]


def test_transactions_survive_kill9_whole_or_not_at_all(fresh_strata, topic_name):
    """Transactions of 3 records on 3 partitions run while the broker is
    killed (-9) and restarted; afterwards every transaction is visible to
    read_committed either whole or not at all, and every one whose commit
    returned is whole."""
    s = fresh_strata.start()
    create_topic(s.bootstrap, topic_name, partitions=3)
    # A producer that opens a transaction and is never heard from again:
    # after the restarts its coordinator must abort it on timeout, or
    # read_committed consumers would stall behind it forever.
    abandoned = txn_producer(s.bootstrap, f"gone-{topic_name}", **{"transaction.timeout.ms": 3000})
    abandoned.begin_transaction()
    for part in range(3):
        abandoned.produce(topic_name, value=f"0-{part}".encode(), partition=part)
    assert abandoned.flush(30) == 0
    loop = TxnLoop(lambda: s.bootstrap, topic_name, f"k9-{topic_name}", partitions=3)
    for _ in range(2):
        loop.wait_for(5)
        time.sleep(random.uniform(0.05, 0.5))
        s.kill9()
        s.start()
        loop.wait_for(3)
    loop.stop()
    # The abandoned transaction times out (3 s) and is aborted by the
    # coordinator; until then it holds read_committed back.
    wait_stable(s.bootstrap, topic_name, 3)
    values = read_values(s.bootstrap, topic_name, 3, "read_committed", timeout=30)
    assert not any(v.startswith("0-") for v in values), "the abandoned transaction was aborted"
    loop.check_all_or_nothing(values)


class TxnLoop:
    """A thread running transactions of one record per partition (values
    `<txn>-<partition>`), starting over with a new producer (same
    transactional.id) whenever the old one fails fatally."""

    def __init__(self, bootstrap, topic, txn_id, partitions):
        self.bootstrap, self.topic, self.txn_id, self.partitions = bootstrap, topic, txn_id, partitions
        self.committed, self.attempted, self.errors = [], [], []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        producer, n = None, 0
        while not self.halt.is_set():
            try:
                if producer is None:
                    producer = Producer({"bootstrap.servers": self.bootstrap(),
                                         "transactional.id": self.txn_id,
                                         "transaction.timeout.ms": 5000,
                                         "message.timeout.ms": 5000,
                                         "linger.ms": 1})
                    producer.init_transactions(20)
                n += 1
                self.attempted.append(n)
                producer.begin_transaction()
                for part in range(self.partitions):
                    producer.produce(self.topic, value=f"{n}-{part}".encode(), partition=part)
                producer.commit_transaction(20)
                self.committed.append(n)
            except KafkaException as e:
                self.errors.append(str(e))
                if producer is not None and e.args[0].txn_requires_abort():
                    try:
                        producer.abort_transaction(20)
                        continue
                    except KafkaException:
                        pass
                producer = None  # fatal, or the broker is down: start over
                time.sleep(0.2)

    def wait_for(self, more, timeout=90):
        """Waits until `more` further transactions have committed."""
        target = len(self.committed) + more
        wait_until(lambda: len(self.committed) >= target, timeout=timeout,
                   what=f"{more} more transactions to commit")

    def stop(self):
        self.halt.set()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def check_all_or_nothing(self, values):
        by_txn = {}
        for v in values:
            txn, part = v.split("-")
            by_txn.setdefault(int(txn), set()).add(int(part))
        whole = set(range(self.partitions))
        partial = {k: v for k, v in by_txn.items() if v != whole}
        assert not partial, f"partially visible transactions: {partial}"
        missing = [n for n in self.committed if n not in by_txn]
        assert not missing, f"committed transactions lost: {missing}"
        assert len(values) == self.partitions * len(by_txn), "no record twice"
        print(f"attempted {len(self.attempted)}, committed {len(self.committed)}, "
              f"visible {len(by_txn)}, client errors {len(self.errors)}")


class CuttingProxy:
    """A TCP proxy that forwards to `target` and, while `cutting`, closes
    a random connection every `every` seconds (mid-request or
    mid-response), forcing the client to retry."""

    def __init__(self, target, every=0.25, max_cuts=30):
        self.target = target
        self.every = every
        self.port = free_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.conns = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cutting = threading.Event()
        self.cuts = 0
        self.max_cuts = max_cuts
        self.threads = [threading.Thread(target=self.accept, daemon=True),
                        threading.Thread(target=self.cut, daemon=True)]
        for t in self.threads:
            t.start()

    def accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        while not self.stop.wait(self.every):
            if not self.cutting.is_set() or self.cuts >= self.max_cuts:
                continue
            with self.lock:
                live = [c for c in self.conns if c[0].fileno() >= 0]
                self.conns = live
                if not live:
                    continue
                victim = random.choice(live)
            for s in victim:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.cuts += 1

    def close(self):
        self.stop.set()
        self.server.close()
        with self.lock:
            for pair in self.conns:
                for s in pair:
                    try:
                        s.close()
                    except OSError:
                        pass


def test_idempotent_producer_with_cut_connections_leaves_no_duplicates(tmp_path, topic_name):
    """Clients reach the broker only through a proxy that keeps cutting
    connections; the idempotent producer's retries must not duplicate or
    lose anything."""
    port = free_port()
    proxy = CuttingProxy(("127.0.0.1", port))
    s = Strata(tmp_path / "data", extra_args=["--advertise", f"127.0.0.1:{proxy.port}"])
    s.port = port
    try:
        s.start()
        assert s.port == port
        bootstrap = f"127.0.0.1:{proxy.port}"
        create_topic(bootstrap, topic_name, partitions=2)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 2, "batch.num.messages": 50,
                      "message.timeout.ms": 60000, "retry.backoff.ms": 20,
                      "reconnect.backoff.max.ms": 200})
        n = 4000
        delivered = []

        def cb(err, msg):
            assert err is None, err
            delivered.append(msg.value().decode())

        proxy.cutting.set()
        for i in range(n):
            p.produce(topic_name, value=f"{i}".encode(), partition=i % 2, on_delivery=cb)
            p.poll(0)
            if i % 200 == 0:
                time.sleep(0.05)
        assert p.flush(90) == 0
        proxy.cutting.clear()
        assert proxy.cuts >= 5, f"only {proxy.cuts} connections were cut"
        assert len(delivered) == n
        values = read_values(bootstrap, topic_name, 2, "read_uncommitted", expected=None, timeout=60)
        assert len(values) == len(set(values)), \
            f"{len(values) - len(set(values))} duplicates after {proxy.cuts} cuts"
        assert sorted(values, key=int) == [str(i) for i in range(n)]
        for part in range(2):
            mine = [int(v) for v in values if int(v) % 2 == part]
            assert mine == sorted(mine), "order kept per partition"
        print(f"{n} records, {proxy.cuts} connections cut, 0 duplicates")
    finally:
        proxy.close()
        if s.alive():
            s.stop()


def test_cold_tier_keeps_only_committed_records(fresh_strata, topic_name):
    """Segments holding committed and aborted transactions go to Parquet:
    the files hold only committed records, and read_committed consumers
    read exactly the committed ones across both tiers."""
    import os
    from pathlib import Path
    import pyarrow.parquet as pq
    from test_cold_tier import local_log_bytes

    s = fresh_strata
    s.extra_args = ["--set", "retention_check_interval_ms=300"]
    s.start()
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "32768", "local.retention.bytes": "65536"})
    p = txn_producer(s.bootstrap, f"tx-{topic_name}")
    committed = []
    for t in range(40):
        p.begin_transaction()
        values = [f"{t}-{i}-".encode() + os.urandom(500).hex().encode() for i in range(10)]
        for v in values:
            p.produce(topic_name, value=v)
        if t % 3 == 2:
            assert p.flush(30) == 0
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            committed.extend(v.decode() for v in values)

    wait_until(lambda: local_log_bytes(s, topic_name) < 65536 + 2 * 32768,
               timeout=90, what="local segments to be offloaded and deleted")
    objects = Path(s.data_dir) / "objects" / "topics" / topic_name / "partition=0"
    rows = []
    # Only finished objects: an upload in progress is a staging file.
    for f in sorted(f for f in objects.iterdir() if re.match(r"^\d{20}-\d{20}-e\d+\.parquet$", f.name)):
        rows.extend(v.decode() for v in pq.read_table(f).column("value").to_pylist())
    assert rows, "some segments were offloaded"
    assert set(rows) <= set(committed), "no aborted record in Parquet"
    assert len(rows) == len(set(rows))
    # Cold rows are a prefix of the committed records, in order.
    assert rows == committed[:len(rows)]

    assert read_values(s.bootstrap, topic_name, 1, "read_committed", timeout=60) == committed


def test_cli_shows_transactions_and_producers(strata, topic_name):
    from conftest import strata_cli
    create_topic(strata.bootstrap, topic_name, partitions=2)
    open_id, done_id = f"open-{topic_name}", f"done-{topic_name}"
    p = txn_producer(strata.bootstrap, open_id)
    p.begin_transaction()
    p.produce(topic_name, value=b"x", partition=1)
    assert p.flush(30) == 0
    q = txn_producer(strata.bootstrap, done_id)
    q.begin_transaction()
    q.produce(topic_name, value=b"y", partition=0)
    q.commit_transaction(30)

    listed = strata_cli("txn", "list", "--bootstrap", strata.bootstrap).stdout
    rows = {line.split()[0]: line.split()[2] for line in listed.splitlines()[1:]}
    assert rows.get(open_id) == "Ongoing" and rows.get(done_id) == "CompleteCommit", listed
    ongoing = strata_cli("txn", "list", "--bootstrap", strata.bootstrap, "--state", "Ongoing").stdout
    assert open_id in ongoing and done_id not in ongoing
    described = strata_cli("txn", "describe", "--bootstrap", strata.bootstrap, "--id", open_id).stdout
    assert "state:            Ongoing" in described and f"{topic_name} [1]" in described, described
    producers = strata_cli("txn", "producers", "--bootstrap", strata.bootstrap,
                           "--topic", topic_name).stdout
    # Partition 1's open transaction starts at offset 0; partition 0 has none.
    by_part = {line.split()[0]: line.split()[4] for line in producers.splitlines()[1:]}
    assert by_part == {"0": "-1", "1": "0"}, producers
    p.abort_transaction(30)
    after = strata_cli("txn", "describe", "--bootstrap", strata.bootstrap, "--id", open_id).stdout
    assert "CompleteAbort" in after


def test_pending_transactional_offsets_are_unstable_for_read_committed(strata, topic_name):
    """While a transaction holds a group's offset, a read_committed consumer
    (OffsetFetch with require_stable) is told UNSTABLE_OFFSET_COMMIT and
    waits; once it commits, the new offset is there."""
    create_topic(strata.bootstrap, topic_name, partitions=1)
    group = f"g-{topic_name}"
    meta_source = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": group})
    p = txn_producer(strata.bootstrap, f"tx-{topic_name}")
    p.begin_transaction()
    p.produce(topic_name, value=b"x")
    p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 5)],
                                  meta_source.consumer_group_metadata(), 30)

    def committed(isolation, timeout):
        c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": group,
                      "isolation.level": isolation})
        try:
            return c.committed([TopicPartition(topic_name, 0)], timeout)[0].offset
        finally:
            c.close()

    # Without require_stable the last committed offset (none) comes back.
    assert committed("read_uncommitted", 10) < 0
    with pytest.raises(KafkaException):
        committed("read_committed", 3)
    p.commit_transaction(30)
    assert committed("read_committed", 10) == 5
    meta_source.close()
