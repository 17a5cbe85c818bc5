"""The HTTP endpoint: /healthz, /readyz, /metrics."""
import urllib.request

from confluent_kafka import Producer

from conftest import create_topic


def get(strata, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{strata.http_port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def test_health_and_readiness(strata):
    assert get(strata, "/healthz")[0] == 200
    assert get(strata, "/readyz") == (200, "ready\n")


def test_metrics_reflect_traffic(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    p = Producer({"bootstrap.servers": strata.bootstrap})
    for i in range(10):
        p.produce(topic_name, value=b"x" * 100)
    assert p.flush(20) == 0
    status, text = get(strata, "/metrics")
    assert status == 200
    assert "# TYPE strata_produce_bytes_total counter" in text
    line = next(l for l in text.splitlines()
                if l.startswith(f'strata_partition_log_end_offset{{topic="{topic_name}",partition="0"}}'))
    assert line.endswith(" 10")
    produced = int(next(l.split()[1] for l in text.splitlines() if l.startswith("strata_produce_bytes_total")))
    assert produced >= 1000
