"""Fixtures that run the real `strata` binary on free loopback ports.

Every wait is bounded; every process started here is stopped at teardown.
"""
import os
import re
import signal
import subprocess
import time
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
    """One `strata dev` process on a data directory that outlives restarts."""

    def __init__(self, data_dir, extra_args=()):
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.http_port = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30):
        # Reuse the previous port when restarting so clients can reconnect.
        listen = f"127.0.0.1:{self.port or 0}"
        args = [str(BIN), "dev", "--data-dir", str(self.data_dir),
                "--listen", listen, "--http", "127.0.0.1:0", *FAST_GROUPS, *self.extra_args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
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
    s = Strata(tmp_path_factory.mktemp("strata") / "data").start()
    yield s
    code = s.stop()
    assert "panicked" not in s.log(), s.log()[-3000:]
    assert code == 0, f"strata exited with {code}"


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
