"""Consumer groups (classic protocol) with real clients."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import create_topic, strata_cli, wait_until

HERE = Path(__file__).parent


def consumer(strata, group, **conf):
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 300, "enable.auto.commit": False, **conf})
    return c


def assignments(cs):
    return [sorted(tp.partition for tp in c.assignment()) for c in cs]


def poll_until_split(cs, partitions, timeout=30):
    """Polls every consumer until their assignments cover all partitions, disjointly."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in cs:
            c.poll(0.05)
        a = assignments(cs)
        flat = [p for ps in a for p in ps]
        if all(a) and sorted(flat) == list(range(partitions)):
            return a
    raise TimeoutError(f"no clean split: {assignments(cs)}")


def produce_n(strata, topic, n):
    p = Producer({"bootstrap.servers": strata.bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
    assert p.flush(30) == 0


def test_two_then_three_consumers_split_without_overlap_or_gap(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=6)
    group = f"g-{topic_name}"
    cs = [consumer(strata, group), consumer(strata, group)]
    for c in cs:
        c.subscribe([topic_name])
    a = poll_until_split(cs, 6)
    assert sorted(len(x) for x in a) == [3, 3]
    cs.append(consumer(strata, group))
    cs[-1].subscribe([topic_name])
    a = poll_until_split(cs, 6)
    assert sorted(len(x) for x in a) == [2, 2, 2]
    # Every record is consumed exactly once across the three.
    produce_n(strata, topic_name, 300)
    seen = []
    deadline = time.time() + 30
    while len(seen) < 300 and time.time() < deadline:
        for c in cs:
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                seen.append(int(m.value()))
    assert sorted(seen) == list(range(300))
    for c in cs:
        c.close()


def test_closed_consumer_partitions_move_to_the_others(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    cs = [consumer(strata, group) for _ in range(2)]
    for c in cs:
        c.subscribe([topic_name])
    poll_until_split(cs, 4)
    start = time.time()
    cs[0].close()  # sends LeaveGroup
    a = poll_until_split(cs[1:], 4, timeout=20)
    assert a == [[0, 1, 2, 3]]
    # A leave is seen at once, not after the 6 s session timeout.
    assert time.time() - start < 5
    cs[1].close()


def test_killed_consumer_partitions_move_after_session_timeout(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    member = subprocess.Popen(
        [sys.executable, str(HERE / "group_member.py"), strata.bootstrap, group, topic_name, "3000"],
        stdout=subprocess.PIPE, text=True)
    try:
        local = consumer(strata, group)
        local.subscribe([topic_name])
        poll_until_split([local], 4, timeout=30) if False else None
        # Wait until the other process holds partitions too.
        deadline = time.time() + 30
        while time.time() < deadline:
            local.poll(0.05)
            mine = assignments([local])[0]
            if mine and len(mine) < 4:
                break
        assert 0 < len(assignments([local])[0]) < 4, assignments([local])
        member.kill()  # SIGKILL: no LeaveGroup
        member.wait(timeout=10)
        killed_at = time.time()
        a = poll_until_split([local], 4, timeout=30)
        took = time.time() - killed_at
        assert a == [[0, 1, 2, 3]]
        assert took >= 1.5, f"moved after {took:.1f}s: before the session timeout?"
        local.close()
    finally:
        if member.poll() is None:
            member.kill()


def test_manual_commit_then_resume_in_new_consumer(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=1)
    produce_n(strata, topic_name, 100)
    group = f"g-{topic_name}"
    c = consumer(strata, group)
    c.subscribe([topic_name])
    got = []
    deadline = time.time() + 30
    while len(got) < 40 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    c.commit(message=got[39], asynchronous=False)
    c.close()
    c2 = consumer(strata, group)
    c2.subscribe([topic_name])
    first = None
    deadline = time.time() + 30
    while first is None and time.time() < deadline:
        m = c2.poll(0.2)
        if m is not None and m.error() is None:
            first = m
    assert first is not None and first.offset() == 40
    assert c2.committed([TopicPartition(topic_name, 0)], timeout=10)[0].offset == 40
    c2.close()


def test_a_topic_created_again_does_not_inherit_the_deleted_ones_offsets(strata, topic_name):
    """As in Kafka, deleting a topic deletes its offsets: a group that had
    read 100 records of the old topic reads the new one from its start
    (auto.offset.reset), not from offset 100."""
    from confluent_kafka.admin import AdminClient
    create_topic(strata.bootstrap, topic_name, partitions=1)
    produce_n(strata, topic_name, 100)
    group = f"g-{topic_name}"

    def read(n):
        c = consumer(strata, group)
        c.subscribe([topic_name])
        got = []
        deadline = time.time() + 15
        while len(got) < n and time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m)
        if got:
            c.commit(asynchronous=False)
        c.close()
        return got

    assert len(read(100)) == 100
    a = AdminClient({"bootstrap.servers": strata.bootstrap})
    a.delete_topics([topic_name])[topic_name].result(timeout=10)
    wait_until(lambda: topic_name not in a.list_topics(timeout=5).topics, what="topic deleted")
    create_topic(strata.bootstrap, topic_name, partitions=1)
    produce_n(strata, topic_name, 300)
    got = read(300)
    assert len(got) == 300 and got[0].offset() == 0, (len(got), got[0].offset() if got else None)


def test_commit_metadata_past_the_bound_is_refused_for_its_partition(strata, topic_name):
    """offset.metadata.max.bytes (4096, Kafka's default): a partition whose
    commit carries more gets OFFSET_METADATA_TOO_LARGE and keeps no offset;
    the other partition of the same commit is stored, metadata and all."""
    create_topic(strata.bootstrap, topic_name, partitions=2)
    c = consumer(strata, "meta-bound")
    # (librdkafka sends a metadata string with its terminating NUL byte.)
    offsets = [TopicPartition(topic_name, 0, 5, metadata="m" * 4000),
               TopicPartition(topic_name, 1, 7, metadata="m" * 5000)]
    try:
        results = c.commit(offsets=offsets, asynchronous=False)
        errors = {tp.partition: tp.error for tp in results}
    except KafkaException as e:
        errors = {1: e.args[0]}
    assert errors.get(1) is not None and errors[1].code() == KafkaError.OFFSET_METADATA_TOO_LARGE, errors
    got = c.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=10)
    c.close()
    assert got[0].offset == 5
    assert got[1].offset < 0, "nothing committed for the refused partition"


def test_auto_commit(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=2)
    produce_n(strata, topic_name, 50)
    group = f"g-{topic_name}"
    c = consumer(strata, group, **{"enable.auto.commit": True, "auto.commit.interval.ms": 200})
    c.subscribe([topic_name])
    n = 0
    deadline = time.time() + 30
    while n < 50 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            n += 1
    assert n == 50
    time.sleep(0.5)
    c.close()
    check = consumer(strata, f"other-{group}")
    committed = check.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=10)
    check.close()
    # committed() of another group id sees nothing; ask with the right group.
    c3 = consumer(strata, group)
    committed = c3.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=10)
    c3.close()
    total = sum(tp.offset for tp in committed)
    assert total == 50, committed


def test_kafka_python_in_a_group(strata, topic_name):
    from kafka import KafkaConsumer, TopicPartition as KTP
    create_topic(strata.bootstrap, topic_name, partitions=2)
    produce_n(strata, topic_name, 20)
    group = f"kp-{topic_name}"
    kc = KafkaConsumer(topic_name, bootstrap_servers=strata.bootstrap, group_id=group,
                       auto_offset_reset="earliest", enable_auto_commit=False,
                       consumer_timeout_ms=15000)
    got = []
    for m in kc:
        got.append(int(m.value))
        if len(got) == 20:
            break
    assert sorted(got) == list(range(20))
    assert sorted(tp.partition for tp in kc.assignment()) == [0, 1]
    kc.commit()
    assert kc.committed(KTP(topic_name, 0)) + kc.committed(KTP(topic_name, 1)) == 20
    kc.close()


def test_cli_group_list_and_describe(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=2)
    produce_n(strata, topic_name, 10)
    group = f"g-{topic_name}"
    c = consumer(strata, group)
    c.subscribe([topic_name])
    poll_until_split([c], 2)
    c.commit(offsets=[TopicPartition(topic_name, 0, 1), TopicPartition(topic_name, 1, 2)],
             asynchronous=False)
    r = strata_cli("group", "list", "--bootstrap", strata.bootstrap)
    assert r.returncode == 0, r.stderr
    assert any(line.startswith(f"{group} Stable") for line in r.stdout.splitlines()), r.stdout
    r = strata_cli("group", "describe", "--bootstrap", strata.bootstrap, "--group", group)
    assert r.returncode == 0, r.stderr
    assert "state Stable" in r.stdout and "range" in r.stdout
    rows = [l.split() for l in r.stdout.splitlines() if l.strip().startswith(topic_name)]
    # topic partition committed log-end lag member
    lag = {int(row[1]): (int(row[2]), int(row[4])) for row in rows}
    ends = {p: c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)[1] for p in (0, 1)}
    assert lag == {0: (1, ends[0] - 1), 1: (2, ends[1] - 2)}
    c.close()


def test_cooperative_sticky_assignor(strata, topic_name):
    create_topic(strata.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    cs = [consumer(strata, group, **conf)]
    cs[0].subscribe([topic_name])
    assert poll_until_split(cs, 4) == [[0, 1, 2, 3]]
    cs.append(consumer(strata, group, **conf))
    cs[1].subscribe([topic_name])
    a = poll_until_split(cs, 4)
    assert sorted(len(x) for x in a) == [2, 2]
    for c in cs:
        c.close()


def test_list_describe_delete_groups_and_offsets(strata, topic_name):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaAdminClient, TopicPartition as KTP
    create_topic(strata.bootstrap, topic_name, partitions=2)
    group = f"g-{topic_name}"
    c = consumer(strata, group)
    c.subscribe([topic_name])
    poll_until_split([c], 2)
    c.commit(offsets=[TopicPartition(topic_name, 0, 5), TopicPartition(topic_name, 1, 6)],
             asynchronous=False)
    a = AdminClient({"bootstrap.servers": strata.bootstrap})
    listed = a.list_consumer_groups().result(timeout=10)
    assert group in [g.group_id for g in listed.valid]
    d = a.describe_consumer_groups([group])[group].result(timeout=10)
    assert d.state.name == "STABLE" and len(d.members) == 1
    assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]

    # A live group can be neither deleted nor have a subscribed topic's offsets deleted.
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group])[group].result(timeout=10)
    assert e.value.args[0].name() == "NON_EMPTY_GROUP"
    ka = KafkaAdminClient(bootstrap_servers=strata.bootstrap)
    res = ka.delete_group_offsets(group, [KTP(topic_name, 0)])
    from kafka.errors import GroupSubscribedToTopicError
    assert res == {KTP(topic_name, 0): GroupSubscribedToTopicError}, res
    c.close()

    # Once empty: delete one partition's offset, then the whole group.
    from kafka.errors import NoError
    assert ka.delete_group_offsets(group, [KTP(topic_name, 0)]) == {KTP(topic_name, 0): NoError}
    offs = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=10)
    assert {tp.partition: tp.offset for tp in offs.topic_partitions} == {1: 6}
    a.delete_consumer_groups([group])[group].result(timeout=10)
    listed = a.list_consumer_groups().result(timeout=10)
    assert group not in [g.group_id for g in listed.valid]
    ka.close()


def test_an_idle_groups_offsets_expire_after_the_retention(fresh_strata, topic_name):
    """offsets.retention.minutes, at its least (1): a group that committed
    and left has no committed offsets a minute later; a group still
    consuming keeps its own."""
    fresh_strata.extra_args += ["--set", "offsets_retention_minutes=1",
                                "--set", "offsets_retention_check_interval_ms=1000"]
    s = fresh_strata.start()
    create_topic(s.bootstrap, topic_name, partitions=1)
    produce_n(s, topic_name, 10)
    tp = [TopicPartition(topic_name, 0)]

    def read_all(group):
        c = consumer(s, group)
        c.subscribe([topic_name])
        got, deadline = 0, time.time() + 30
        while got < 10 and time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got += 1
        c.commit(asynchronous=False)
        return c

    read_all(f"left-{topic_name}").close()
    staying = read_all(f"stays-{topic_name}")
    left = consumer(s, f"left-{topic_name}")
    assert left.committed(tp, timeout=10)[0].offset == 10
    started = time.time()
    # The staying member polls (heartbeats) meanwhile; bounded at 100 s.
    while time.time() - started < 100:
        staying.poll(0.5)
        if left.committed(tp, timeout=10)[0].offset < 0:
            break
    waited = time.time() - started
    assert left.committed(tp, timeout=10)[0].offset < 0, "not expired after 100 s"
    assert waited >= 50, f"expired after {waited:.0f} s, before the retention"
    assert staying.committed(tp, timeout=10)[0].offset == 10
    staying.close()
    left.close()
