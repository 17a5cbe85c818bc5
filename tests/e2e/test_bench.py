"""`strata bench` against a running `strata dev` (small counts; no timing asserted)."""
import json

from conftest import strata_cli


def bench(*args, timeout=120):
    r = strata_cli("bench", *args, "--json", timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bench_produce_consume_e2e_report_json(strata, topic_name):
    rep = bench("produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                "--partitions", "2", "--records", "5000", "--batch", "250", "--size", "64")
    assert rep["test"] == "produce" and rep["records"] == 5000 and rep["bytes"] == 5000 * 64
    # Latency is per record, from creation to acknowledgement.
    assert rep["latency_ms"]["samples"] == 5000 and rep["records_per_sec"] > 0
    for k in ("p50", "p95", "p99", "p999", "max"):
        assert rep["latency_ms"][k] > 0
    assert rep["config"]["batch"] == 250 and rep["config"]["in_flight"] == 5

    rep = bench("consume", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                "--partitions", "2", "--records", "5000")
    assert rep["records"] == 5000
    # 250-record batches arrive as such: 5000 records of 64 B in 20 batches
    # are far fewer bytes than 5000 one-record batches would be.
    assert rep["bytes"] < 5000 * (64 + 61)

    # `--duration` is e2e's `--seconds` too; the topic gets `--partitions`.
    rep = bench("e2e", "--bootstrap", strata.bootstrap, "--topic", f"{topic_name}-lat",
                "--partitions", "3", "--rate", "100", "--duration", "1")
    assert rep["test"] == "e2e" and rep["latency_ms"]["samples"] == 100
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": strata.bootstrap}).list_topics(f"{topic_name}-lat", timeout=10)
    assert len(md.topics[f"{topic_name}-lat"].partitions) == 3

    r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--records", "10", timeout=60)
    assert r.returncode == 0 and "records/s" in r.stdout and "p99" in r.stdout


def test_bench_produce_rate_duration_linger(strata, topic_name):
    # 400 records/s over 2 partitions for 1.5 s with 20 ms linger: about 600
    # records, sent in small lingered batches, each record's latency counted.
    rep = bench("produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                "--partitions", "2", "--duration", "1.5", "--rate", "400", "--linger-ms", "20",
                "--batch", "1000")
    assert 500 <= rep["records"] <= 600, rep
    assert rep["latency_ms"]["samples"] == rep["records"]
    # A record waits up to the linger before its batch goes out.
    assert rep["latency_ms"]["p50"] >= 1, rep
    assert rep["config"]["rate"] == 400
    consumed = bench("consume", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                     "--partitions", "2", "--records", str(rep["records"]))
    assert consumed["records"] == rep["records"]


def test_bench_idempotent_producer_and_acks_zero(strata, topic_name):
    rep = bench("produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                "--partitions", "2", "--records", "4000", "--batch", "100",
                "--idempotence", "--acks", "all", "--in-flight", "5")
    assert rep["records"] == 4000 and rep["config"]["idempotence"] is True
    # The broker tracked one producer with sequences 0..1999 per partition.
    r = strata_cli("txn", "producers", "--bootstrap", strata.bootstrap, "--topic", topic_name)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2 and all(row[3] == "1999" for row in rows), r.stdout

    r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--records", "10", "--idempotence", "--acks", "1")
    assert r.returncode != 0 and "acks all" in r.stderr

    rep = bench("produce", "--bootstrap", strata.bootstrap, "--topic", f"{topic_name}-a0",
                "--partitions", "1", "--records", "3000", "--batch", "100", "--acks", "0")
    assert rep["records"] == 3000
    consumed = bench("consume", "--bootstrap", strata.bootstrap, "--topic", f"{topic_name}-a0",
                     "--partitions", "1", "--records", "3000")
    assert consumed["records"] == 3000


def test_bench_refuses_bad_options(strata, topic_name):
    for extra in (["--records", "0"], ["--duration", "-1"], ["--rate", "0"],
                  ["--acks", "2"], ["--batch", "0"], ["--compression", "brotli"]):
        r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                       *extra, timeout=30)
        assert r.returncode != 0 and "error" in r.stderr.lower(), (extra, r.stderr)
        assert "panicked" not in r.stderr


def test_bench_consume_reports_and_fails_when_the_topic_runs_dry(strata, topic_name):
    # 300 records, 1000 asked for: the consumer stops a second after the
    # last one (it waited out the 600 s limit before), prints the report
    # of what it read and fails saying why.
    bench("produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
          "--partitions", "2", "--records", "300")
    r = strata_cli("bench", "consume", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--partitions", "2", "--records", "1000", "--idle-timeout", "1", "--json",
                   timeout=60)
    assert r.returncode != 0
    assert "consumed only 300 of 1000 records" in r.stderr and "--idle-timeout" in r.stderr, r.stderr
    rep = json.loads(r.stdout)
    assert rep["test"] == "consume" and rep["records"] == 300 and rep["records_per_sec"] > 0
    for bad in ("-1", "nan"):
        r = strata_cli("bench", "consume", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                       "--records", "10", f"--idle-timeout={bad}", timeout=30)
        assert r.returncode != 0 and "--idle-timeout" in r.stderr and "panicked" not in r.stderr


def test_bench_bounds_what_a_large_record_size_or_rate_costs(strata, topic_name):
    # 20 MB records: batches hold one (a batch of 1000 made up front would
    # be 20 GB), and the broker's refusal is the error.
    r = strata_cli("bench", "produce", "--bootstrap", strata.bootstrap, "--topic", topic_name,
                   "--partitions", "1", "--records", "2", "--size", "20000000", timeout=60)
    assert r.returncode != 0 and "MessageTooLarge" in r.stderr, r.stderr[-2000:]
    assert "panicked" not in r.stderr
    # A rate one connection cannot keep (each record acknowledged before
    # the next): the run ends a second after its schedule, not after
    # 100 000 round trips, reports what was sent, and says so.
    r = strata_cli("bench", "e2e", "--bootstrap", strata.bootstrap, "--topic", f"{topic_name}-fast",
                   "--partitions", "1", "--rate", "100000", "--seconds", "1", "--json", timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert 0 < rep["config"]["sent"] < 100000 and rep["latency_ms"]["samples"] == rep["config"]["sent"]
    assert "could not keep 100000/s" in r.stderr
