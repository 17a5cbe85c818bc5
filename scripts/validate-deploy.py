#!/usr/bin/env python3
"""Offline validation of Strata's deployment files.

Checks, without a cloud account, a cluster or Docker:
  terraform/   every file parses (python-hcl2); `terraform fmt -check` when a
               terraform binary is on PATH; checkov passes, and every
               `#checkov:skip=ID:reason` carries a reason.
  k8s/         yamllint; each overlay (and the base) is rendered (kustomize or
               `kubectl kustomize` when present, else a built-in renderer for
               the subset of kustomize used here) and every resource passes
               `kubernetes-validate --strict`; references a schema cannot
               see are checked too (Service selectors and target ports,
               ConfigMaps, Secrets, PDB selectors, probe ports, the
               StatefulSet's governing Service); strata.toml in the ConfigMap
               is accepted by `strata config` when --strata-bin is given.
  localstack/  yamllint; the compose file parses and its references resolve.
  Dockerfile   multi-stage, non-root runtime user; .dockerignore drops target/.

Exit status 0 when everything passes; otherwise 1 with one line per problem,
each naming the file.
"""

import argparse
import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import hcl2
import yaml

# Kubernetes versions the manifests must be valid for: the EKS version the
# Terraform example defaults to, and the newest bundled schema.
K8S_VERSIONS = ["1.31.0", "1.37.0"]

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "PersistentVolume", "CustomResourceDefinition", "PriorityClass"}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")

    def run(self, where, cmd, **kw):
        """Runs cmd; records its output as a problem when it fails."""
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
        except FileNotFoundError as e:
            self.add(where, f"cannot run {cmd[0]}: {e}")
            return False
        if r.returncode != 0:
            out = (r.stdout + r.stderr).strip()
            self.add(where, f"`{' '.join(cmd)}` failed:\n{out}")
            return False
        return True


# ---------------------------------------------------------------- terraform

SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def check_terraform(root, checkov, p):
    tf_dir = os.path.join(root, "terraform")
    files = sorted(glob.glob(os.path.join(tf_dir, "**", "*.tf"), recursive=True))
    if not files:
        p.add(tf_dir, "no Terraform files found")
        return
    for f in files:
        with open(f) as fh:
            text = fh.read()
        try:
            hcl2.loads(text)
        except Exception as e:  # python-hcl2 raises lark errors of many types
            p.add(f, f"does not parse as HCL: {e}")
        for n, line in enumerate(text.splitlines(), 1):
            m = SKIP_RE.search(line)
            if m and len((m.group(2) or "").strip()) < 10:
                p.add(f"{f}:{n}", f"checkov skip {m.group(1)} has no justification")
    if shutil.which("terraform"):
        p.run(tf_dir, ["terraform", "fmt", "-check", "-recursive", "-diff", tf_dir])
    else:
        print("note: terraform not installed; `terraform fmt -check` skipped")
    if not checkov:
        p.add(tf_dir, "checkov not found (pass --checkov PATH)")
        return
    p.run(tf_dir, [checkov, "-d", tf_dir, "--framework", "terraform", "--quiet",
                   "--compact", "--skip-download"])


# ---------------------------------------------------------------- yaml lint

def yamllint(paths, root, p):
    cfg = os.path.join(root, ".yamllint")
    p.run("yamllint", [sys.executable, "-m", "yamllint", "--strict", "-c", cfg, *paths])


# ------------------------------------------------------ kustomize rendering

def load_docs(path, p):
    try:
        with open(path) as fh:
            return [d for d in yaml.safe_load_all(fh) if d is not None]
    except yaml.YAMLError as e:
        p.add(path, f"invalid YAML: {e}")
        return []


def merge(base, patch):
    """Strategic merge for the cases used here: maps merge recursively; lists
    of named maps (containers, volumes, env, ports) merge by name; other
    lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            for i, existing in enumerate(out):
                if existing["name"] == item["name"]:
                    out[i] = merge(existing, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [((spec.get("template") or {}).get("spec") or {})]
    if doc.get("kind") == "Pod":
        return [spec]
    return []


SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images", "namespace", "labels"}


def render_builtin(directory, p):
    kfile = os.path.join(directory, "kustomization.yaml")
    k = load_docs(kfile, p)
    if not k:
        return []
    k = k[0]
    for key in k:
        if key not in SUPPORTED:
            p.add(kfile, f"`{key}` is not supported by the built-in renderer; install kustomize")
    docs = []
    for r in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, r))
        if os.path.isdir(path):
            docs += render_builtin(path, p)
        elif os.path.isfile(path):
            docs += load_docs(path, p)
        else:
            p.add(kfile, f"resource {r} does not exist")
    for entry in k.get("patches", []):
        path = os.path.join(directory, entry.get("path", ""))
        if "path" not in entry or set(entry) - {"path"} or not os.path.isfile(path):
            p.add(kfile, f"patch {entry} must be a strategic-merge `path` to an existing file")
            continue
        for patch in load_docs(path, p):
            key = (patch.get("kind"), (patch.get("metadata") or {}).get("name"))
            hits = [i for i, d in enumerate(docs)
                    if (d.get("kind"), (d.get("metadata") or {}).get("name")) == key]
            if len(hits) != 1:
                p.add(path, f"patch target {key[0]}/{key[1]} matches {len(hits)} resources")
                continue
            docs[hits[0]] = merge(docs[hits[0]], patch)
    for group in k.get("labels", []):
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(group.get("pairs", {}))
    if "namespace" in k:
        for d in docs:
            if d.get("kind") not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for d in docs:
            for spec in pod_specs(d):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    name, _, tag = c.get("image", "").partition(":")
                    if name == img["name"]:
                        c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    return docs


def render(directory, p, renderer="auto"):
    if renderer == "builtin":
        return render_builtin(directory, p)
    for cmd in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd + [directory], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                p.add(directory, f"{' '.join(cmd)} failed: {r.stderr.strip()}")
                return []
            return [d for d in yaml.safe_load_all(r.stdout) if d is not None]
    return render_builtin(directory, p)


# ------------------------------------------------ references in a rendering

def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(where, docs, p):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[(d.get("metadata") or {}).get("name")] = d
    workloads = [d for d in docs if pod_specs(d)]

    def pod_labels(w):
        if w["kind"] == "Pod":
            return (w.get("metadata") or {}).get("labels") or {}
        return ((w["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}

    for name, svc in by_kind.get("Service", {}).items():
        sel = (svc.get("spec") or {}).get("selector") or {}
        targets = [w for w in workloads if labels_match(sel, pod_labels(w))]
        if not targets:
            p.add(where, f"Service {name} selects no workload ({sel})")
            continue
        port_names = {port.get("name") for w in targets for s in pod_specs(w)
                      for c in s.get("containers", []) for port in c.get("ports", [])}
        for port in svc["spec"].get("ports", []):
            t = port.get("targetPort")
            if isinstance(t, str) and t not in port_names:
                p.add(where, f"Service {name} targets port {t!r}, which no selected container names")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(labels_match(sel, pod_labels(w)) for w in workloads):
            p.add(where, f"PodDisruptionBudget {name} selects no workload")
    for w in workloads:
        wname = f"{w['kind']} {w['metadata'].get('name')}"
        if w["kind"] == "StatefulSet":
            svc = by_kind.get("Service", {}).get(w["spec"].get("serviceName"))
            if svc is None or (svc.get("spec") or {}).get("clusterIP") != "None":
                p.add(where, f"{wname}: serviceName must name a headless Service in the rendering")
        sel = ((w.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if sel is not None and not labels_match(sel, pod_labels(w)):
            p.add(where, f"{wname}: selector does not match its pod template labels")
        for spec in pod_specs(w):
            sa = spec.get("serviceAccountName")
            if sa and sa not in by_kind.get("ServiceAccount", {}):
                p.add(where, f"{wname}: service account {sa} is not defined")
            for v in spec.get("volumes", []):
                cm = (v.get("configMap") or {})
                if cm and not cm.get("optional") and cm.get("name") not in by_kind.get("ConfigMap", {}):
                    p.add(where, f"{wname}: ConfigMap {cm.get('name')} is not defined")
                sec = (v.get("secret") or {})
                if sec and not sec.get("optional") and sec.get("secretName") not in by_kind.get("Secret", {}):
                    p.add(where, f"{wname}: Secret {sec.get('secretName')} is not defined")
            volume_names = {v.get("name") for v in spec.get("volumes", [])}
            claim_names = {(c.get("metadata") or {}).get("name")
                           for c in (w.get("spec") or {}).get("volumeClaimTemplates", [])}
            for c in spec.get("containers", []):
                ports = {pt.get("name") for pt in c.get("ports", [])}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    pr = c.get(probe) or {}
                    port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        p.add(where, f"{wname}: {probe} uses unknown port {port!r}")
                for m in c.get("volumeMounts", []):
                    if m.get("name") not in volume_names | claim_names:
                        p.add(where, f"{wname}: volumeMount {m.get('name')} has no volume")
                for ef in c.get("envFrom", []):
                    ref = ef.get("secretRef") or ef.get("configMapRef") or {}
                    kind = "Secret" if "secretRef" in ef else "ConfigMap"
                    if not ref.get("optional") and ref.get("name") not in by_kind.get(kind, {}):
                        p.add(where, f"{wname}: {kind} {ref.get('name')} is not defined")


def check_strata_toml(where, docs, strata_bin, p):
    cms = [d for d in docs if d.get("kind") == "ConfigMap"
           and (d.get("metadata") or {}).get("name") == "strata-config"]
    if not cms:
        p.add(where, "no ConfigMap strata-config in the rendering")
        return
    text = (cms[0].get("data") or {}).get("strata.toml")
    if not text:
        p.add(where, "ConfigMap strata-config has no strata.toml")
        return
    if not strata_bin:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(text)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        p.run(f"{where} strata.toml", [strata_bin, "config", "--config", fh.name], env=env)
    finally:
        os.unlink(fh.name)


def check_k8s(root, strata_bin, renderer, p):
    k8s = os.path.join(root, "k8s")
    targets = [os.path.join(k8s, "base")] + sorted(glob.glob(os.path.join(k8s, "overlays", "*")))
    base_docs = []
    for directory in targets:
        where = os.path.relpath(directory, root)
        docs = render(directory, p, renderer)
        if not docs:
            p.add(where, "renders no resources")
            continue
        if directory.endswith("base"):
            base_docs = docs
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump_all(docs, fh, sort_keys=False)
        try:
            for version in K8S_VERSIONS:
                p.run(f"{where} (Kubernetes {version})",
                      ["kubernetes-validate", "--strict", "--quiet", "-k", version, fh.name])
        finally:
            os.unlink(fh.name)
        check_references(where, docs, p)
        check_strata_toml(where, docs, strata_bin, p)
    # The ServiceMonitor needs CRDs, so it is not schema-checked; its
    # selector and port must still find the brokers' metrics port.
    for f in sorted(glob.glob(os.path.join(k8s, "extras", "*.yaml"))):
        for d in load_docs(f, p):
            if d.get("kind") != "ServiceMonitor":
                continue
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            svcs = [s for s in base_docs if s.get("kind") == "Service"
                    and labels_match(sel, (s.get("metadata") or {}).get("labels") or {})]
            ports = {pt.get("name") for s in svcs for pt in s["spec"].get("ports", [])}
            for ep in (d.get("spec") or {}).get("endpoints", []):
                if ep.get("port") not in ports:
                    p.add(f, f"endpoint port {ep.get('port')!r} is on no Service it selects")


# ---------------------------------------------------- compose and Dockerfile

def check_compose(root, p):
    f = os.path.join(root, "localstack", "docker-compose.yml")
    docs = load_docs(f, p)
    if not docs:
        p.add(f, "empty or unparsable")
        return
    services = docs[0].get("services") or {}
    for need in ("localstack", "etcd"):
        if need not in services:
            p.add(f, f"service {need} missing")
    brokers = [n for n, s in services.items() if "broker" in (s.get("command") or [])]
    if len(brokers) < 3:
        p.add(f, f"expected three brokers, found {len(brokers)}")
    for name, s in services.items():
        for dep in s.get("depends_on") or {}:
            if dep not in services:
                p.add(f, f"service {name} depends on unknown service {dep}")


def check_dockerfile(root, p):
    f = os.path.join(root, "Dockerfile")
    try:
        lines = [ln.strip() for ln in open(f) if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as e:
        p.add(f, str(e))
        return
    froms = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    if len(froms) < 2:
        p.add(f, "must be a multi-stage build")
        return
    users = [ln.split(None, 1)[1] for ln in lines[froms[-1]:] if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        p.add(f, "the runtime stage must switch to a non-root USER")
    ignore = os.path.join(root, ".dockerignore")
    if not os.path.isfile(ignore) or "target" not in open(ignore).read():
        p.add(ignore, "must exclude target/ from the build context")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--checkov", default=shutil.which("checkov"))
    ap.add_argument("--strata-bin", default=os.environ.get("STRATA_BIN"))
    ap.add_argument("--renderer", choices=["auto", "builtin"], default="auto",
                    help="auto: kustomize or kubectl when present, else built-in")
    ap.add_argument("--only", choices=["terraform", "k8s", "compose", "docker"], action="append",
                    help="run only these checks (repeatable)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    only = set(args.only or ["terraform", "k8s", "compose", "docker"])
    p = Problems()
    if "terraform" in only:
        check_terraform(root, args.checkov, p)
    if "k8s" in only:
        yamllint([os.path.join(root, "k8s")], root, p)
        check_k8s(root, args.strata_bin, args.renderer, p)
    if "compose" in only:
        yamllint([os.path.join(root, "localstack", "docker-compose.yml")], root, p)
        check_compose(root, p)
    if "docker" in only:
        check_dockerfile(root, p)
    if p.items:
        print(f"deployment validation FAILED ({len(p.items)} problem(s)):")
        for item in p.items:
            print(f"- {item}")
        return 1
    print("deployment validation passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
