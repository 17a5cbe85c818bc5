"""Offline validation of terraform/, k8s/, localstack/ and the Dockerfile
(scripts/validate-deploy.py), and proof that it can fail: each test breaks a
copy of one file and expects the validation to name the problem."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "validate-deploy.py"
DEPLOY_FILES = ["terraform", "k8s", "localstack", "Dockerfile", ".dockerignore", ".yamllint"]


def checkov():
    path = os.environ.get("STRATA_CHECKOV") or shutil.which("checkov")
    assert path, "checkov is required (scripts/test.sh installs it; set STRATA_CHECKOV)"
    return path


def validate(root, *extra):
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--checkov", checkov(), *extra]
    if os.environ.get("STRATA_BIN"):
        cmd += ["--strata-bin", os.environ["STRATA_BIN"]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_deployment_files_pass_validation():
    r = validate(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deployment validation passed" in r.stdout


def test_builtin_renderer_validates_the_overlays_too():
    # CI machines may lack kubectl/kustomize; the built-in renderer must then
    # produce what they would (checked against kubectl here when present).
    r = validate(ROOT, "--only", "k8s", "--renderer", "builtin")
    assert r.returncode == 0, r.stdout + r.stderr
    if not shutil.which("kubectl"):
        return
    spec = importlib.util.spec_from_file_location("validate_deploy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for overlay in ["base", "overlays/local", "overlays/aws"]:
        d = str(ROOT / "k8s" / overlay)
        problems = mod.Problems()
        ours = mod.render_builtin(d, problems)
        assert not problems.items
        out = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True,
                             check=True).stdout
        theirs = [x for x in yaml.safe_load_all(out) if x]

        def key(x):
            return (x["kind"], x["metadata"]["name"])
        assert sorted(ours, key=key) == sorted(theirs, key=key), overlay


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


BREAKAGES = {
    # name: (file, old, new, --only, expected text in the report)
    "k8s-schema": ("k8s/base/statefulset.yaml", "containerPort: 9644", "containerPortt: 9644",
                   "k8s", "did not validate"),
    "k8s-service-port": ("k8s/base/services.yaml", "targetPort: metrics", "targetPort: metric",
                         "k8s", "targets port 'metric'"),
    "k8s-configmap-ref": ("k8s/base/statefulset.yaml", "name: strata-config", "name: strata-conf",
                          "k8s", "ConfigMap strata-conf is not defined"),
    "k8s-yamllint": ("k8s/base/pdb.yaml", "  maxUnavailable: 1", "  maxUnavailable: 1\n  maxUnavailable: 2",
                     "k8s", "duplication of key"),
    "strata-toml": ("k8s/overlays/aws/configmap.yaml", 'log = "info"', 'log = "info"\n    bogus = 1',
                    "k8s", "strata.toml"),
    "terraform-parse": ("terraform/modules/strata-bucket/main.tf", "resource \"aws_s3_bucket\" \"this\" {",
                        "resource \"aws_s3_bucket\" \"this\" {{", "terraform", "does not parse"),
    "checkov-public-access": ("terraform/modules/strata-bucket/main.tf", "block_public_acls       = true",
                              "block_public_acls       = false", "terraform", "CKV_AWS_53"),
    "checkov-unjustified-skip": ("terraform/modules/strata-bucket/main.tf",
                                 "#checkov:skip=CKV2_AWS_62:Event notifications are not used by Strata",
                                 "#checkov:skip=CKV2_AWS_62", "terraform", "no justification"),
    "compose": ("localstack/docker-compose.yml", "  etcd:\n", "  etcd:\n    - not: [valid\n",
                "compose", "localstack/docker-compose.yml"),
    "dockerfile-root": ("Dockerfile", "USER strata", "USER root", "docker", "non-root USER"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_validation_fails_on_a_broken_copy(tmp_path, name):
    file, old, new, only, expected = BREAKAGES[name]
    for f in DEPLOY_FILES:
        src = ROOT / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / f)
    if name == "strata-toml" and not os.environ.get("STRATA_BIN"):
        pytest.fail("STRATA_BIN must point at the strata binary for this check")
    edit(tmp_path / file, old, new)
    r = validate(tmp_path, "--only", only)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "deployment validation FAILED" in r.stdout
    assert expected in r.stdout, r.stdout
