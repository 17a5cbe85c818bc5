"""`strata bench` against a running `strata dev` (small counts; no timing asserted)."""
import json

from conftest import strata_cli


def test_bench_produce_consume_e2e_report_json(strata, topic_name):
    r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--partitions", "2", "--records", "5000", "--batch", "250", "--size", "64",
                   "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["test"] == "produce" and rep["records"] == 5000 and rep["bytes"] == 5000 * 64
    assert rep["latency_ms"]["samples"] == 20 and rep["records_per_sec"] > 0
    for k in ("p50", "p95", "p99", "p999", "max"):
        assert rep["latency_ms"][k] > 0

    r = strata_cli("bench", "consume", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--partitions", "2", "--records", "5000", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == 5000

    r = strata_cli("bench", "e2e", "--bootstrap", strata.bootstrap, "--topic", f"{topic_name}-lat",
                   "--rate", "100", "--seconds", "1", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["test"] == "e2e" and rep["latency_ms"]["samples"] == 100

    r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--records", "10", timeout=60)
    assert r.returncode == 0 and "records/s" in r.stdout and "p99" in r.stdout
