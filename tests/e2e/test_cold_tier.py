"""The cold tier on the dev profile: sealed segments become Parquet files in
the local object store (file://<data-dir>/objects), local segments go once
offloaded, and consumers read every record back across both tiers."""
import os
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import create_topic, metric, segment_bytes, wait_until

KEY_RE = re.compile(r"^\d{20}-\d{20}-e\d+\.parquet$")


def read_values(bootstrap, topic, n, timeout=60, fetch_bytes=None, offset=0):
    """`n` values of partition 0 from `offset`, in order (bounded wait);
    `fetch_bytes` sets the consumer's per-partition fetch size."""
    conf = {"bootstrap.servers": bootstrap, "group.id": f"read-{time.time()}",
            "enable.auto.commit": False}
    if fetch_bytes is not None:
        conf["max.partition.fetch.bytes"] = fetch_bytes
    c = Consumer(conf)
    c.assign([TopicPartition(topic, 0, offset)])
    got = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def local_log_bytes(s, topic):
    """Bytes of partition 0's local segments."""
    return segment_bytes(Path(s.data_dir) / "logs" / f"{topic}-0")


def fill_and_offload(s, topic, n, size, segment):
    """Creates `topic` with `segment`-byte segments and two of them kept
    locally, produces `n` values of `size` random bytes (incompressible)
    in batches a quarter of a segment, and waits until all but the local
    tail is offloaded and deleted; returns the values."""
    create_topic(s.bootstrap, topic, config={
        "segment.bytes": str(segment), "local.retention.bytes": str(2 * segment)})
    p = Producer({"bootstrap.servers": s.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": segment // 4})
    sent = [f"v{i}-".encode() + os.urandom(size) for i in range(n)]
    for v in sent:
        p.produce(topic, value=v)
    assert p.flush(60) == 0
    wait_until(lambda: local_log_bytes(s, topic) < 4 * segment, timeout=60,
               what="local segments to be offloaded and deleted")
    return sent


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server with a bucket, and a factory for brokers offloading
    to it; both are stopped at teardown."""
    from conftest import Moto, Strata
    moto = Moto(tmp_path).start()
    moto.client().create_bucket(Bucket="strata-test")
    started = []

    def broker(extra=()):
        b = Strata(tmp_path / "data", env=moto.env(), extra_args=[
            "--object-store", "s3://strata-test/lake", *extra])
        started.append(b)
        return b.start()

    yield moto, broker
    for b in started:
        if b.alive():
            b.stop()
    moto.stop()


def test_offload_serve_and_query(fresh_strata, topic_name):
    s = fresh_strata
    s.extra_args = ["--set", "retention_check_interval_ms=300"]
    s.start()
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "65536", "local.retention.bytes": "131072"})
    p = Producer({"bootstrap.servers": s.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 16384, "compression.type": "lz4"})
    sent = []
    for i in range(2500):
        # Incompressible values, so ~2.5 MB really reaches the log.
        key, value = f"k{i % 50}".encode(), f"v{i}-".encode() + os.urandom(1000)
        headers = [("n", str(i).encode()), ("n", None)]
        p.produce(topic_name, key=key, value=value, headers=headers)
        sent.append((key, value, headers))
    assert p.flush(60) == 0

    # Offload and local retention run in the background (bounded wait).
    wait_until(lambda: local_log_bytes(s, topic_name) < 131072 + 2 * 65536, timeout=90,
               what="local segments to be offloaded and deleted")
    assert metric(s, "strata_partition_log_start_offset", f'{{topic="{topic_name}",partition="0"}}') > 1000
    objects = Path(s.data_dir) / "objects" / "topics" / topic_name / "partition=0"
    files = sorted(objects.iterdir())
    assert files and all(KEY_RE.match(f.name) for f in files), files

    def read_all(bootstrap):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cold-{time.time()}",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        deadline = time.time() + 60
        while len(got) < len(sent) and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        low, _ = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10)
        c.close()
        return got, low

    got, low = read_all(s.bootstrap)
    assert low == 0, "ListOffsets earliest spans the cold tier"
    assert [m.offset() for m in got] == list(range(len(sent)))
    assert [(m.key(), m.value(), m.headers()) for m in got] == sent
    assert metric(s, "strata_cold_reads_total") > 0

    # offsets_for_times finds old (cold) records: the first offset whose
    # timestamp is at or after the one asked for.
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "times"})
    for probe in (10, 500):
        ts = got[probe].timestamp()[1]
        want = next(m.offset() for m in got if m.timestamp()[1] >= ts)
        hit = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)[0]
        assert hit.offset == want, (probe, hit.offset, want)
    c.close()

    # Analytics engines read the files directly.
    # (A dataset over the directory would infer a Hive `partition` column that
    # clashes with the file's own `partition` column; read the files.)
    import pyarrow as pa
    table = pa.concat_tables([pq.read_table(f) for f in files])
    rows = table.to_pylist()
    offsets = [r["offset"] for r in rows]
    assert offsets == sorted(offsets) and offsets[0] == 0
    for r in rows:
        key, value, headers = sent[r["offset"]]
        assert (r["key"], r["value"]) == (key, value)
        assert [(h["key"], h["value"]) for h in r["headers"]] == headers
        assert r["partition"] == 0 and r["timestamp_type"] == 0

    # `strata segments` shows both tiers and the Parquet metadata.
    from conftest import strata_cli
    import json
    http = f"127.0.0.1:{s.http_port}"
    r = strata_cli("segments", "list", "--http", http, "--topic", topic_name)
    assert r.returncode == 0, r.stderr
    assert f"{topic_name}-0 leader 0" in r.stdout
    assert "cold [0, " in r.stdout and f"topics/{topic_name}/partition=0/0000" in r.stdout
    assert "hot  [" in r.stdout and "active" in r.stdout
    r = strata_cli("segments", "inspect", "--http", http, "--topic", topic_name,
                   "--partition", "0", "--offset", "5")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["metadata"]["strata.topic"] == topic_name
    assert info["segment"]["base_offset"] == 0 and info["rows"] == info["segment"]["records"]
    r = strata_cli("segments", "list", "--http", http, "--topic", "no-such-topic")
    assert r.returncode != 0 and "unknown topic" in r.stderr

    # After a restart everything is still readable (the manifest is durable).
    assert s.stop() == 0
    s.start()
    got, low = read_all(s.bootstrap)
    assert low == 0 and [(m.key(), m.value()) for m in got] == [(k, v) for k, v, _ in sent]


def test_a_corrupt_cold_object_costs_its_reads_not_the_broker(fresh_strata, topic_name):
    """An object in the cold tier whose footer is corrupt: fetches of its
    offsets fail (KAFKA_STORAGE_ERROR, which clients retry), the broker
    logs why and goes on serving everything else; once the object is
    restored the same consumer reads every record, none lost."""
    s = fresh_strata
    # No cold cache: every cold read range-reads the object from the store.
    s.extra_args = ["--set", "retention_check_interval_ms=300", "--set", "cold_cache_bytes=0"]
    s.start()
    sent = fill_and_offload(s, topic_name, 1500, 500, segment=65536)
    objects = Path(s.data_dir) / "objects" / "topics" / topic_name / "partition=0"
    first = sorted(objects.iterdir())[0]
    good = first.read_bytes()
    # The footer's length, the 4 bytes before the closing magic, made
    # larger than the file.
    first.write_bytes(good[:-8] + (len(good) * 2).to_bytes(4, "little") + good[-4:])

    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"corrupt-{time.time()}",
                  "enable.auto.commit": False, "fetch.error.backoff.ms": 100})
    c.assign([TopicPartition(topic_name, 0, 0)])
    got = []
    deadline = time.time() + 5
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    assert got == [], "nothing is served from the corrupt object"
    assert "cold read failed" in s.log() and first.name in s.log()
    assert metric(s, "strata_cold_read_errors_total") > 0
    assert s.alive()
    # The rest of the partition is served meanwhile: its hot tail.
    end = len(sent) - 1
    tail = read_values(s.bootstrap, topic_name, 1, offset=end)
    assert tail == [sent[end]]

    first.write_bytes(good)
    deadline = time.time() + 60
    while len(got) < len(sent) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    assert [m.offset() for m in got] == list(range(len(sent)))
    assert [m.value() for m in got] == sent


def test_offload_to_s3_and_read_back(s3, topic_name):
    moto, broker = s3
    s = broker(["--set", "retention_check_interval_ms=300"])
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "65536", "local.retention.bytes": "131072"})
    p = Producer({"bootstrap.servers": s.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 16384})
    sent = [f"r{i}-".encode() + os.urandom(900) for i in range(1500)]
    keys_sent = [None if i % 10 == 0 else f"k{i % 13}".encode() for i in range(1500)]
    headers_sent = [[("h", str(i).encode()), ("h", None)] if i % 3 == 0 else [] for i in range(1500)]
    for v, k, h in zip(sent, keys_sent, headers_sent):
        p.produce(topic_name, value=v, key=k, headers=h)
    assert p.flush(60) == 0
    wait_until(lambda: local_log_bytes(s, topic_name) < 131072 + 2 * 65536,
               timeout=90, what="offload to S3 and local deletion")
    listed = moto.client().list_objects_v2(Bucket="strata-test", Prefix="lake/topics/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    prefix = f"lake/topics/{topic_name}/partition=0/"
    assert keys and all(k.startswith(prefix) and KEY_RE.match(k[len(prefix):]) for k in keys), keys
    assert read_values(s.bootstrap, topic_name, len(sent)) == sent
    # In fetches of a few records each: several per cold file, each going
    # on from the reader the last one left (ranged reads from S3).
    before = metric(s, "strata_cold_reads_continued_total")
    assert read_values(s.bootstrap, topic_name, len(sent), fetch_bytes=4096) == sent
    assert metric(s, "strata_cold_reads_continued_total") > before
    # So far the files came from the cache offloading filled. After a
    # restart it is empty: the first read range-reads S3 and keeps what it
    # read, and a second read needs nothing more from S3.
    assert s.stop() == 0
    s.start()
    assert metric(s, "strata_cold_store_read_bytes_total") == 0

    # (Local retention may still move a segment to the cold tier after
    # the restart; the reads are compared once it has settled.)
    def unchanged():
        before = local_log_bytes(s, topic_name)
        time.sleep(1)
        return local_log_bytes(s, topic_name) == before
    wait_until(unchanged, timeout=30, what="local retention settled")
    assert read_values(s.bootstrap, topic_name, len(sent)) == sent
    from_s3 = metric(s, "strata_cold_store_read_bytes_total")
    assert from_s3 > 0
    hits = metric(s, "strata_cold_cache_hit_bytes_total")
    assert read_values(s.bootstrap, topic_name, len(sent)) == sent
    assert metric(s, "strata_cold_store_read_bytes_total") == from_s3
    assert metric(s, "strata_cold_cache_hit_bytes_total") >= hits + from_s3 // 2

    # Engines read the objects straight from the S3 server.
    from pyarrow import fs
    import pyarrow as pa
    pfs = fs.S3FileSystem(endpoint_override=moto.endpoint, scheme="http", region="us-east-1",
                          access_key="test", secret_key="test")
    table = pa.concat_tables([pq.read_table(f"strata-test/{k}", filesystem=pfs) for k in keys])
    values = table.column("value").to_pylist()
    offsets = table.column("offset").to_pylist()
    n = len(offsets)
    assert offsets == list(range(n)) and values == sent[:n]
    assert table.column("key").to_pylist() == keys_sent[:n]
    hdrs = [[(h["key"], h["value"]) for h in row] for row in table.column("headers").to_pylist()]
    assert hdrs == headers_sent[:n]

    import polars as pl
    opts = {"aws_endpoint_url": moto.endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
            "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    df = pl.concat([pl.read_parquet(f"s3://strata-test/{k}", storage_options=opts) for k in keys])
    assert df["offset"].to_list() == offsets and df["value"].to_list() == values
    assert df["key"].to_list() == keys_sent[:n]
    assert [[(h["key"], h["value"]) for h in row] for row in df["headers"].to_list()] == headers_sent[:n]

    import datafusion
    from datafusion.object_store import AmazonS3
    ctx = datafusion.SessionContext()
    ctx.register_object_store("s3://", AmazonS3(
        bucket_name="strata-test", region="us-east-1", access_key_id="test",
        secret_access_key="test", endpoint=moto.endpoint, allow_http=True), "strata-test")
    ctx.register_parquet("cold", f"s3://strata-test/{prefix}")
    rows = ctx.sql('select "offset", key, value, headers from cold order by "offset"').to_pydict()
    assert rows["offset"] == offsets and rows["value"] == values and rows["key"] == keys_sent[:n]
    assert [[(h["key"], h["value"]) for h in row] for row in rows["headers"]] == headers_sent[:n]


def test_a_cold_read_from_s3_fetches_row_groups_ahead(s3, topic_name):
    # Segments of ~37 000 small records: files of three row groups each
    # (at most 16 Ki rows a row group), all offloaded and gone locally.
    moto, broker = s3
    s = broker(["--set", "retention_check_interval_ms=300"])
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "1048576", "local.retention.bytes": "1"})
    p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 20,
                  "batch.size": 65536})
    sent = [b"%019d" % i for i in range(80_000)]
    for v in sent:
        p.produce(topic_name, value=v)
    assert p.flush(60) == 0
    wait_until(lambda: local_log_bytes(s, topic_name) < 1048576,
               timeout=90, what="two segments offloaded and deleted locally")
    # A restart empties the cache: the read below range-reads S3, row
    # group after row group, each file's later row groups fetched while
    # the one before is decoded.
    assert s.stop() == 0
    s.start()
    assert read_values(s.bootstrap, topic_name, len(sent)) == sent
    assert metric(s, "strata_cold_store_read_bytes_total") > 0
    assert metric(s, "strata_cold_read_ahead_bytes_total") > 0


def test_duckdb_queries_the_local_directory_store(fresh_strata, topic_name):
    import duckdb
    s = fresh_strata
    s.extra_args = ["--set", "retention_check_interval_ms=300"]
    s.start()
    create_topic(s.bootstrap, topic_name, config={"segment.bytes": "32768"})
    p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5, "batch.size": 8192})
    for i in range(600):
        p.produce(topic_name, key=f"user-{i % 7}".encode(), value=os.urandom(200))
    assert p.flush(60) == 0
    files = Path(s.data_dir) / "objects" / "topics" / topic_name
    wait_until(lambda: len(list(files.glob("partition=0/*.parquet"))) >= 3, timeout=60,
               what="segments offloaded")
    # Hive inference would add a second `partition` column from the path.
    src = f"read_parquet('{files}/partition=*/*.parquet', hive_partitioning=false)"
    # One query, so one listing of the files: more are offloaded meanwhile,
    # and two queries could count different sets of them.
    total, first, last, user3 = duckdb.sql(
        f'select count(*), min("offset"), max("offset"), '
        f"count(*) filter (where key = 'user-3'::BLOB) from {src}").fetchone()
    assert first == 0 and total == last + 1, "offsets 0..N-1 without gaps"
    assert user3 == sum(1 for o in range(total) if o % 7 == 3)


def test_s3_outage_during_offload_loses_nothing(s3, tmp_path, topic_name):
    from conftest import Moto
    moto, broker = s3
    s = broker(["--set", "retention_check_interval_ms=300"])
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "65536", "local.retention.bytes": "131072"})
    moto.stop()  # S3 goes away before anything is offloaded
    p = Producer({"bootstrap.servers": s.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 16384})
    sent = [f"o{i}-".encode() + os.urandom(900) for i in range(1000)]
    for v in sent:
        p.produce(topic_name, value=v)
    assert p.flush(60) == 0, "produce goes on while S3 is down"
    wait_until(lambda: (metric(s, "strata_offload_errors_total") or 0) > 0, timeout=30,
               what="offload attempts to fail")
    assert metric(s, "strata_offload_backlog_segments") > 0
    assert read_values(s.bootstrap, topic_name, len(sent), timeout=30) == sent, \
        "hot reads go on; nothing was deleted locally"

    # S3 returns on the same port (moto starts empty: recreate the bucket).
    revived = Moto(tmp_path)
    revived.port = moto.port
    revived.start()
    try:
        revived.client().create_bucket(Bucket="strata-test")
        wait_until(lambda: metric(s, "strata_offload_backlog_segments") == 0, timeout=60,
                   what="the backlog to drain")
        keys = revived.client().list_objects_v2(Bucket="strata-test", Prefix="lake/topics/")
        assert keys.get("Contents")
        wait_until(lambda: local_log_bytes(s, topic_name) < 131072 + 2 * 65536, timeout=60,
                   what="local deletion after offload")
        assert read_values(s.bootstrap, topic_name, len(sent)) == sent
    finally:
        s.stop()
        revived.stop()


def test_200_mb_through_s3(s3, topic_name):
    """DESIGN §4 at scale: 200 MB with 1 MiB segments; only the hot tail
    stays local; everything reads back identical, before and after restart."""
    import hashlib
    moto, broker = s3
    s = broker(["--set", "retention_check_interval_ms=500"])
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": str(1 << 20), "local.retention.bytes": str(8 << 20)})
    p = Producer({"bootstrap.servers": s.bootstrap, "acks": "1", "linger.ms": 5,
                  "batch.size": 262144, "queue.buffering.max.kbytes": 1048576})
    n, size = 200_000, 1024
    base_ts = int(time.time() * 1000) - n  # recent: inside retention.ms
    digests = []
    t0 = time.time()
    block = os.urandom(size * 64)
    for i in range(n):
        v = i.to_bytes(8, "big") + block[(i % 63) * size: (i % 63) * size + size - 8]
        digests.append(hashlib.blake2b(v, digest_size=8).digest())
        while True:
            try:
                p.produce(topic_name, value=v, timestamp=base_ts + i)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    wait_until(lambda: metric(s, "strata_offload_backlog_segments") == 0
               and local_log_bytes(s, topic_name) < (8 << 20) + (3 << 20),
               timeout=300, interval=1, what="200 MB offloaded, hot tail only")
    keys = [o["Key"] for o in moto.client().list_objects_v2(
        Bucket="strata-test", Prefix=f"lake/topics/{topic_name}/partition=0/",
        MaxKeys=1000).get("Contents", [])]
    assert len(keys) >= 150, len(keys)

    def read_all():
        c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"big-{time.time()}",
                      "enable.auto.commit": False, "fetch.max.bytes": 52428800})
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        deadline = time.time() + 300
        while len(got) < n and time.time() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    got.append((m.offset(), hashlib.blake2b(m.value(), digest_size=8).digest()))
        c.close()
        return got

    got = read_all()
    assert [o for o, _ in got] == list(range(n))
    assert [d for _, d in got] == digests, "every record identical and in order"
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "times"})
    hit = c.offsets_for_times([TopicPartition(topic_name, 0, base_ts + 1234)], timeout=10)[0]
    assert hit.offset == 1234, "offsets_for_times finds old (cold) records"
    c.close()
    assert s.stop() == 0
    s.start()
    again = read_all()
    assert [d for _, d in again] == digests, "all still readable after a restart"
    print(f"200 MB round trip in {time.time() - t0:.0f}s")


def test_delete_records_across_tiers(fresh_strata, topic_name):
    from confluent_kafka.admin import AdminClient
    s = fresh_strata
    s.extra_args = ["--set", "retention_check_interval_ms=300"]
    s.start()
    sent = fill_and_offload(s, topic_name, 1000, 300, segment=32768)
    objects = Path(s.data_dir) / "objects" / "topics" / topic_name / "partition=0"
    before = len(list(objects.iterdir()))
    a = AdminClient({"bootstrap.servers": s.bootstrap})
    res = a.delete_records([TopicPartition(topic_name, 0, 600)])
    low = list(res.values())[0].result(timeout=30)
    assert low.low_watermark == 600
    assert len(list(objects.iterdir())) < before, "cold segments wholly below are gone"
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "dr", "auto.offset.reset": "earliest"})
    assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (600, 1000)
    c.close()
    # A consumer from the beginning starts at 600; offsets below are gone.
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "dr2", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic_name])
    got = []
    deadline = time.time() + 30
    while len(got) < 400 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value()))
    c.close()
    assert got == [(600 + i, sent[600 + i]) for i in range(400)]
    # Past the high watermark is an error.
    bad = list(a.delete_records([TopicPartition(topic_name, 0, 5000)]).values())[0]
    with pytest.raises(Exception):
        bad.result(timeout=10)
    # The start offset survives a restart.
    assert s.stop() == 0
    s.start()
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "dr3"})
    assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (600, 1000)
    c.close()


def test_s3_settings_from_the_config_file(tmp_path, topic_name):
    from conftest import Moto, Strata
    moto = Moto(tmp_path).start()
    s = None
    try:
        moto.client().create_bucket(Bucket="strata-test")
        cfg = tmp_path / "strata.toml"
        cfg.write_text(
            f'object_store = "s3://strata-test/fromfile"\n'
            f'aws_endpoint_url = "{moto.endpoint}"\naws_region = "us-east-1"\n'
            f'aws_access_key_id = "test"\naws_secret_access_key = "test"\naws_allow_http = true\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        s = Strata(tmp_path / "data", extra_args=["--config", str(cfg)])
        s.env = env
        s.start()
        create_topic(s.bootstrap, topic_name, config={"segment.bytes": "16384"})
        p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5, "batch.size": 4096})
        for i in range(200):
            p.produce(topic_name, value=os.urandom(300))
        assert p.flush(30) == 0

        def listed():
            r = moto.client().list_objects_v2(Bucket="strata-test", Prefix="fromfile/topics/")
            return r.get("Contents", [])

        wait_until(listed, timeout=30, what="objects offloaded with config-file credentials")
    finally:
        if s is not None and s.alive():
            s.stop()
        moto.stop()


def test_log_append_times_survive_the_cold_tier(fresh_strata, topic_name):
    """A topic stamped with log-append time: every record read back from the
    cold tier carries its own batch's append time (several batches, each
    appended at another millisecond, share a Parquet file)."""
    s = fresh_strata
    s.extra_args = ["--set", "retention_check_interval_ms=300"]
    s.start()
    create_topic(s.bootstrap, topic_name, config={
        "segment.bytes": "65536", "local.retention.bytes": "65536",
        "message.timestamp.type": "LogAppendTime"})
    p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 0})
    stamped = {}

    def delivered(err, m):
        assert err is None, err
        stamped[m.offset()] = m.timestamp()

    for batch in range(60):
        for i in range(10):
            p.produce(topic_name, value=f"{batch}-{i}-".encode() + os.urandom(1000),
                      timestamp=1_000 + batch, on_delivery=delivered)
        assert p.flush(30) == 0
        time.sleep(0.003)  # the next batch is appended at a later millisecond
    n = len(stamped)
    assert n == 600
    times = {ts for _, ts in stamped.values()}
    assert all(t == 2 for t, _ in stamped.values()), "log-append time, not create time"
    assert len(times) > 10, "batches appended at different milliseconds"

    wait_until(lambda: local_log_bytes(s, topic_name) < 65536 + 2 * 65536, timeout=90,
               what="local segments to be offloaded and deleted")
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"lat-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic_name, 0, 0)])
    got = {}
    deadline = time.time() + 60
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got[m.offset()] = m.timestamp()
    c.close()
    assert metric(s, "strata_cold_reads_total") > 0
    assert got == stamped
