"""scripts/local-cluster.sh: etcd, moto S3 and three brokers on one host; a
real client produces and consumes through it; `down` stops all of it."""
import os
import re
import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-cluster.sh"


def run(args, env, timeout=180):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_local_cluster_script_end_to_end(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "STATE_DIR": str(state), "STRATA_BIN": os.environ["STRATA_BIN"]}
    up = run(["up"], env)
    pids = {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pids = {f.name: int(f.read_text()) for f in (state / "pids").iterdir()}
        assert set(pids) == {"etcd", "s3", "broker-1", "broker-2", "broker-3"}
        m = re.search(r"bootstrap servers: (\S+)", up.stdout)
        assert m, up.stdout
        bootstrap = m.group(1)
        assert len(bootstrap.split(",")) == 3
        assert all(h.startswith("127.0.0.1:") for h in bootstrap.split(","))
        assert run(["status"], env).returncode == 0

        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("local-demo", num_partitions=3)])["local-demo"].result(30)
        # Every broker is in the cluster, each with the rack the script gave it.
        ka = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
        racks = sorted(b["rack"] for b in ka.describe_cluster()["brokers"])
        ka.close()
        assert racks == ["zone-a", "zone-b", "zone-c"]

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(300):
            p.produce("local-demo", key=str(i).encode(), value=f"v{i}".encode())
        assert p.flush(30) == 0

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "local-demo-g",
                      "auto.offset.reset": "earliest"})
        c.subscribe(["local-demo"])
        got, partitions = set(), set()
        deadline = time.time() + 60
        while len(got) < 300 and time.time() < deadline:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            got.add(m.value().decode())
            partitions.add(m.partition())
        c.close()
        assert got == {f"v{i}" for i in range(300)}
        assert partitions == {0, 1, 2}, "keys spread over partitions led by different brokers"

        # The CLI routes to each partition's leader and the group's
        # coordinator, from a comma-separated bootstrap list.
        strata = os.environ["STRATA_BIN"]
        lines = "".join(f"k{i}|cli{i}\n" for i in range(60))
        r = subprocess.run([strata, "produce", "--bootstrap", bootstrap, "--topic", "local-demo",
                            "--key-separator", "|", "--batch", "7"],
                           input=lines, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([strata, "consume", "--bootstrap", bootstrap, "--topic", "local-demo",
                            "--from-beginning", "--count", "360", "--timeout-ms", "10000"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.split()) == sorted([f"v{i}" for i in range(300)]
                                                  + [f"cli{i}" for i in range(60)])
        r = subprocess.run([strata, "group", "describe", "--bootstrap", bootstrap,
                            "--group", "local-demo-g"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("local-demo ") == 3, r.stdout
        # `strata bench` sends each partition to its leader, so it works
        # against a cluster from the bootstrap list (3 partitions, 3 leaders).
        r = subprocess.run([strata, "bench", "produce", "--bootstrap", bootstrap, "--topic",
                            "local-demo", "--partitions", "3", "--records", "3000", "--batch", "100",
                            "--acks", "-1", "--json"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert '"records":3000' in r.stdout.replace(" ", ""), r.stdout
        r = subprocess.run([strata, "bench", "consume", "--bootstrap", bootstrap, "--topic",
                            "local-demo", "--partitions", "3", "--records", "3360", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        down = run(["down"], env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state.exists()
    deadline = time.time() + 10
    while any(alive(pid) for pid in pids.values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not [n for n, pid in pids.items() if alive(pid)], "down left processes running"


def test_down_without_up_is_harmless(tmp_path):
    env = {**os.environ, "STATE_DIR": str(tmp_path / "none")}
    r = run(["down"], env)
    assert r.returncode == 0
    assert "nothing running" in r.stdout
    assert run(["bogus"], env).returncode == 2
