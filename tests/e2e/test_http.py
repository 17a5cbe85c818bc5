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


def test_request_times_by_type(strata, topic_name):
    """Each request type seen has a Prometheus histogram of its handling
    time: cumulative buckets that never go down, +Inf equal to the count."""
    create_topic(strata.bootstrap, topic_name)
    p = Producer({"bootstrap.servers": strata.bootstrap, "linger.ms": 0})
    for i in range(5):
        p.produce(topic_name, value=b"x")
        p.flush(20)
    text = get(strata, "/metrics")[1]
    assert "# TYPE strata_request_duration_seconds histogram" in text
    name = "strata_request_duration_seconds"

    for api in ("Produce", "Metadata", "ApiVersions"):
        buckets, count = histogram(text, name, f'api="{api}"')
        assert buckets[-1] == ("+Inf", count), api
        counts = [n for _, n in buckets]
        assert counts == sorted(counts), (api, buckets)
    assert histogram(text, name, 'api="Produce"')[1] >= 5


def histogram(text, name, labels=""):
    """Histogram `name`'s buckets [(le, cumulative count)] and count, for
    the series with `labels` (`key="value"`, or none)."""
    prefix = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
    buckets = []
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((le, int(line.split()[1])))
    count_line = f"{name}_count{{{labels}}} " if labels else f"{name}_count "
    count = int(next(l.split()[1] for l in text.splitlines() if l.startswith(count_line)))
    return buckets, count


def test_runtime_wakeup_delays(strata):
    """The runtime's wakeup probe runs (every 10 ms) and renders as a
    Prometheus histogram without labels."""
    name = "strata_runtime_wakeup_delay_seconds"
    text = get(strata, "/metrics")[1]
    assert f"# TYPE {name} histogram" in text
    buckets, count = histogram(text, name)
    assert count > 0
    assert buckets[-1] == ("+Inf", count)
    counts = [n for _, n in buckets]
    assert counts == sorted(counts), buckets


def errors_returned(strata, error, code):
    """How many times the broker says it returned `error` (`code`)."""
    prefix = f'strata_errors_returned_total{{error="{error}",code="{code}"}} '
    text = get(strata, "/metrics")[1]
    return next((int(l.split()[1]) for l in text.splitlines() if l.startswith(prefix)), 0)


def test_errors_returned_by_code(strata, topic_name):
    """An error the broker returns to a client is counted under its code:
    creating a topic twice gets TOPIC_ALREADY_EXISTS (36), mapped from the
    broker's error; a request for an API the broker does not know gets
    UNSUPPORTED_VERSION (35), decided by the request's handler."""
    import pytest
    import struct
    from confluent_kafka import KafkaException
    from test_bad_input import closed_or_answer, connect

    create_topic(strata.bootstrap, topic_name)
    before = errors_returned(strata, "TopicAlreadyExists", 36)
    with pytest.raises(KafkaException):
        create_topic(strata.bootstrap, topic_name)
    assert errors_returned(strata, "TopicAlreadyExists", 36) == before + 1

    before = errors_returned(strata, "UnsupportedVersion", 35)
    s = connect(strata)
    req = struct.pack(">hhih", 9999, 0, 42, -1)  # api key 9999, v0, correlation 42
    s.sendall(struct.pack(">i", len(req)) + req)
    body = closed_or_answer(s)
    s.close()
    assert body is not None and struct.unpack(">ih", body[:6]) == (42, 35)
    assert errors_returned(strata, "UnsupportedVersion", 35) == before + 1
