"""Topic administration through real clients and the strata CLI."""
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, NewPartitions

from conftest import create_topic, strata_cli


def admin(strata):
    return AdminClient({"bootstrap.servers": strata.bootstrap})


def test_create_duplicate_delete(strata, topic_name):
    a = admin(strata)
    create_topic(strata.bootstrap, topic_name, partitions=3)
    md = a.list_topics(timeout=10)
    assert len(md.topics[topic_name].partitions) == 3

    dup = a.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as e:
        dup[topic_name].result(timeout=10)
    assert e.value.args[0].name() == "TOPIC_ALREADY_EXISTS"

    a.delete_topics([topic_name])[topic_name].result(timeout=10)
    assert topic_name not in a.list_topics(timeout=10).topics


def test_invalid_requests_get_clear_errors(strata, topic_name):
    a = admin(strata)
    bad_config = a.create_topics([NewTopic(topic_name, 1, 1, config={"no.such.config": "1"})])
    with pytest.raises(KafkaException) as e:
        bad_config[topic_name].result(timeout=10)
    assert e.value.args[0].name() == "INVALID_CONFIG"

    # A number padded with whitespace parses, but no valid value is long.
    padded = a.create_topics([NewTopic(topic_name, 1, 1, config={"retention.ms": " " * 20000 + "1"})])
    with pytest.raises(KafkaException) as e:
        padded[topic_name].result(timeout=10)
    assert e.value.args[0].name() == "INVALID_CONFIG"
    assert "20001 bytes" in e.value.args[0].str()
    assert topic_name not in a.list_topics(timeout=10).topics

    bad_rf = a.create_topics([NewTopic(topic_name, 1, replication_factor=3)])
    with pytest.raises(KafkaException) as e:
        bad_rf[topic_name].result(timeout=10)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"

    bad_name = a.create_topics([NewTopic("bad/name", 1, 1)])
    with pytest.raises(KafkaException) as e:
        bad_name["bad/name"].result(timeout=10)
    assert e.value.args[0].name() == "TOPIC_EXCEPTION"


def test_validate_only_creates_nothing(strata, topic_name):
    a = admin(strata)
    a.create_topics([NewTopic(topic_name, 2, 1)], validate_only=True)[topic_name].result(timeout=10)
    assert topic_name not in a.list_topics(timeout=10).topics


def test_describe_and_alter_configs(strata, topic_name):
    a = admin(strata)
    create_topic(strata.bootstrap, topic_name, config={"retention.ms": "123456"})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = a.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == "123456"
    assert not configs["retention.ms"].is_default
    assert configs["max.message.bytes"].value == "1048588"
    assert configs["max.message.bytes"].is_default

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    res.set_config("segment.bytes", "1048576", overwrite=True)
    from confluent_kafka.admin import ConfigEntry, AlterConfigOpType
    alter = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    a.incremental_alter_configs([alter])[alter].result(timeout=10)
    configs = a.describe_configs([res])[res].result(timeout=10)
    assert configs["segment.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "604800000"


def test_create_partitions(strata, topic_name):
    a = admin(strata)
    create_topic(strata.bootstrap, topic_name, partitions=1)
    a.create_partitions([NewPartitions(topic_name, 4)])[topic_name].result(timeout=10)
    assert len(a.list_topics(timeout=10).topics[topic_name].partitions) == 4
    shrink = a.create_partitions([NewPartitions(topic_name, 2)])
    with pytest.raises(KafkaException) as e:
        shrink[topic_name].result(timeout=10)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"


def test_describe_cluster(strata):
    a = admin(strata)
    c = a.describe_cluster().result(timeout=10)
    assert len(c.nodes) == 1
    assert c.nodes[0].port == strata.port
    assert c.cluster_id


def test_cli_topic_lifecycle(strata, topic_name):
    b = strata.bootstrap
    r = strata_cli("topic", "create", "--bootstrap", b, "--topic", topic_name,
                   "--partitions", "2", "--config", "retention.ms=60000")
    assert r.returncode == 0, r.stderr
    r = strata_cli("topic", "create", "--bootstrap", b, "--topic", topic_name)
    assert r.returncode != 0 and "TopicAlreadyExists" in r.stderr
    r = strata_cli("topic", "list", "--bootstrap", b)
    assert topic_name in r.stdout.split()
    r = strata_cli("produce", "--bootstrap", b, "--topic", topic_name, "--partition", "1",
                   input="a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    r = strata_cli("topic", "describe", "--bootstrap", b, "--topic", topic_name)
    assert r.returncode == 0, r.stderr
    assert "partition 1 leader 0" in r.stdout and "offsets [0, 3)" in r.stdout
    assert "retention.ms=60000 (topic)" in r.stdout
    r = strata_cli("consume", "--bootstrap", b, "--topic", topic_name, "--from-beginning",
                   "--count", "3", "--timeout-ms", "10000")
    assert r.stdout.split() == ["a", "b", "c"], r.stderr
    r = strata_cli("topic", "alter", "--bootstrap", b, "--topic", topic_name,
                   "--set", "retention.ms=1000")
    assert r.returncode == 0, r.stderr
    r = strata_cli("topic", "delete", "--bootstrap", b, "--topic", topic_name)
    assert r.returncode == 0, r.stderr
    r = strata_cli("topic", "describe", "--bootstrap", b, "--topic", topic_name)
    assert r.returncode != 0 and "UnknownTopicOrPartition" in r.stderr
