"""Offline checks of localstack/ (no Docker engine or Python 3.13 here)."""
import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_describes_localstack_etcd_and_three_brokers():
    d = yaml.safe_load((ROOT / "localstack" / "docker-compose.yml").read_text())
    s = d["services"]
    assert {"localstack", "etcd", "broker-1", "broker-2", "broker-3"} <= set(s)
    assert any("ready.d" in v for v in s["localstack"]["volumes"]), "bucket init hook mounted"
    ports = [p for name in ("broker-1", "broker-2", "broker-3") for p in s[name]["ports"]]
    assert len(ports) == len(set(ports))
    for i, name in enumerate(("broker-1", "broker-2", "broker-3"), start=1):
        cmd = s[name]["command"]
        assert cmd[:3] == ["broker", "--id", str(i)]
        assert cmd[cmd.index("--object-store") + 1].startswith("s3://")
        assert s[name]["environment"]["AWS_ALLOW_HTTP"] == "true"


def test_scripts_are_valid_shell():
    for script in ["localstack/run-localstack.sh", "localstack/init/ready.d/create-bucket.sh"]:
        r = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert os.access(ROOT / script, os.X_OK)


def test_host_script_fails_clearly_without_python_3_13(tmp_path):
    if shutil.which("python3.13"):
        return  # this machine could run LocalStack; nothing to check here
    r = subprocess.run([str(ROOT / "localstack" / "run-localstack.sh")], capture_output=True,
                       text=True, timeout=30, env={**os.environ, "STATE_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert "LocalStack needs Python 3.13" in r.stderr
