"""Transactions across a replicated cluster (etcd + three brokers, RF 3):
markers reach partition leaders on other brokers over gRPC, and kill -9 of
a partition leader and of the transaction coordinator's broker leaves
every transaction committed or aborted as a whole."""
import random
import time

from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until
from test_replication import bootstrap, etcd_and_brokers, partition_md, wait_full_isr
from test_transactions import TxnLoop, read_values, wait_stable


def coordinator_of(brokers, txn_id):
    """The live broker that last became `txn_id`'s transaction coordinator."""
    needle = f'became transaction coordinator transactional_id="{txn_id}"'
    best = None
    for i, b in brokers.items():
        if not b.alive():
            continue
        log = b.log()
        at = log.rfind(needle)
        if at >= 0:
            stamp = log[:at].rsplit("\n", 1)[-1][:30]
            if best is None or stamp > best[0]:
                best = (stamp, i)
    return best and best[1]


def test_kill9_of_leader_and_coordinator_mid_transaction(tmp_path):
    with etcd_and_brokers(tmp_path, cluster="txn") as brokers:
        topic, txn_id = "txr", "txr-loop"
        a = AdminClient({"bootstrap.servers": bootstrap(brokers)})
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[topic].result(30)
        wait_full_isr(brokers, topic)
        loop = TxnLoop(lambda: bootstrap(brokers), topic, txn_id, partitions=3)
        loop.wait_for(10)

        victims = []
        # Round 1: the leader of partition 0; round 2: the coordinator.
        for round_ in range(2):
            if round_ == 0:
                victim = partition_md(brokers, topic)[0].leader
            else:
                victim = coordinator_of(brokers, txn_id)
                assert victim is not None, "coordinator found in the logs"
            victims.append(victim)
            time.sleep(random.uniform(0.05, 0.3))
            brokers[victim].kill9()
            loop.wait_for(5)
            brokers[victim].start()
            wait_full_isr(brokers, topic)
            loop.wait_for(5)
        loop.stop()
        wait_stable(bootstrap(brokers), topic, 3)
        values = read_values(bootstrap(brokers), topic, 3, "read_committed", timeout=60)
        loop.check_all_or_nothing(values)
        print(f"killed brokers {victims}")
