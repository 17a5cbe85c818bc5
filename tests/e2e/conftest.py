"""Fixtures that run the real `strata` binary on free loopback ports.

Every wait is bounded; every process started here is stopped at teardown.
"""
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STRATA_BIN", ROOT / "target" / "debug" / "strata"))

# Settings that keep group tests fast; session timeouts stay realistic.
FAST_GROUPS = [
    "--set", "group_initial_rebalance_delay_ms=0",
    "--set", "group_min_session_timeout_ms=1000",
]


class Strata:
    """One `strata dev` (or, with `mode=["broker", ...]`, `strata broker`)
    process on a data directory that outlives restarts."""

    def __init__(self, data_dir, extra_args=(), mode=("dev",), env=None):
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.mode = list(mode)
        self.env = {**os.environ, **(env or {})}
        self.proc = None
        self.port = None
        self.http_port = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30):
        try:
            return self._start(timeout, self.port or 0)
        except RuntimeError as e:
            # A client's ephemeral port may have taken our old listening port.
            if self.port and "Address already in use" in str(e):
                return self._start(timeout, 0)
            raise

    def _start(self, timeout, port):
        # Reuse the previous port when restarting so clients can reconnect.
        listen = f"127.0.0.1:{port}"
        args = [str(BIN), *self.mode, "--data-dir", str(self.data_dir),
                "--listen", listen, "--http", "127.0.0.1:0", *FAST_GROUPS, *self.extra_args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            k = re.search(r"kafka listening on 127\.0\.0\.1:(\d+)", text)
            h = re.search(r"http listening on 127\.0\.0\.1:(\d+)", text)
            if k and h:
                self.port, self.http_port = int(k.group(1)), int(h.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"strata exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        self.proc.kill()
        raise TimeoutError(f"strata did not start within {timeout}s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def log(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def strata(tmp_path_factory):
    """A broker shared by the tests of one module (they use distinct topics)."""
    home = tmp_path_factory.mktemp("strata")
    s = Strata(home / "data").start()
    yield s
    code = s.stop()
    assert "panicked" not in s.log(), s.log()[-3000:]
    assert code == 0, f"strata exited with {code}"
    # Kept when the module fails (the asserts above); gone when it passes,
    # like the tests' own tmp_path (pytest.ini).
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fresh_strata(tmp_path):
    """A broker of the test's own, for restart and crash tests."""
    s = Strata(tmp_path / "data")
    yield s
    if s.alive():
        s.stop()
    assert "panicked" not in s.log()


@pytest.fixture
def topic_name():
    return f"t-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap, name, partitions=1, config=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                       replication_factor=1, config=config or {})])
    fs[name].result(timeout=30)
    return name


def wait_until(pred, timeout=30, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def strata_cli(*args, input=None, timeout=60):
    r = subprocess.run([str(BIN), *args], input=input, capture_output=True,
                       text=True, timeout=timeout)
    return r


def segment_bytes(path):
    """Bytes of the local segments (`*.log`) in a partition directory; a
    segment deleted while we look (retention, offload) counts as gone."""
    total = 0
    for f in Path(path).glob("*.log"):
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            pass
    return total


def metric(proc, name, labels=""):
    """A counter or gauge of `proc`'s /metrics (a Strata or a broker
    process), as an int; None when it is not there."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + labels + " "):
                return int(line.split()[-1])
    return None


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A real etcd (Debian's etcd-server) on free loopback ports, alone or as
    one member of a local cluster."""

    def __init__(self, workdir, name="e0", client_port=None, peer_port=None):
        self.workdir = Path(workdir)
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster=None, wait=True):
        initial_cluster = initial_cluster or f"{self.name}={self.peer_url}"
        log = open(self.workdir / f"etcd-{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", self.name, "--data-dir", str(self.workdir / f"etcd-{self.name}"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run(["etcdctl", "--endpoints", self.endpoint, "endpoint", "health"],
                               capture_output=True, text=True, timeout=10,
                               env={**os.environ, "ETCDCTL_API": "3"})
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"etcd {self.name} not healthy within {timeout}s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def ctl(self, *args):
        r = subprocess.run(["etcdctl", "--endpoints", self.endpoint, *args],
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "ETCDCTL_API": "3"})
        assert r.returncode == 0, r.stderr
        return r.stdout


def broker_process(workdir, broker_id, etcd_endpoints, cluster="e2e", extra=()):
    """A `strata broker` with a short session TTL so failover is quick."""
    return Strata(Path(workdir) / f"broker-{broker_id}",
                  mode=["broker", "--id", str(broker_id), "--etcd", etcd_endpoints,
                        "--cluster", cluster, "--grpc", "127.0.0.1:0"],
                  extra_args=["--set", "session_timeout_ms=3000", *extra])


class Moto:
    """moto's S3 server (a real HTTP S3 endpoint) on a free loopback port."""

    def __init__(self, workdir):
        self.port = free_port()
        self.workdir = Path(workdir)
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self):
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_ALLOW_HTTP": "true"}

    def start(self):
        log = open(self.workdir / "moto.log", "ab")
        self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=log)
        log.close()
        import urllib.request
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)
                return self
            except Exception:
                time.sleep(0.2)
        raise TimeoutError("moto did not start")

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
