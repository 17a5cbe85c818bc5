#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit and integration tests, then
# the end-to-end suite that drives the real `strata` binary with real Kafka
# clients (confluent-kafka/librdkafka, kafka-python, kcat). Installs what is
# missing (kcat, etcd, the Python clients). Every server the tests start
# (strata, etcd) listens on free loopback ports and is stopped by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
# Incremental state (~1.7 GB of `target/`) only pays off across many edits;
# this command builds each crate once. A developer's own setting wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
apt_install kcat etcd-server etcd-client
# Debian starts etcd as a service on install; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd >/dev/null 2>&1 || true; fi
need_python_clients
need_deploy_tools

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo test"
cargo test --workspace -q
echo "== criterion benches, each run once (test mode: no timing)"
cargo test --workspace --benches -q >/dev/null
echo "== build strata"
cargo build --bin strata -q
echo "== end-to-end (tests/e2e)"
export STRATA_BIN="$PWD/target/debug/strata"
python3 -m pytest tests/e2e -q -p no:warnings -p no:cacheprovider "$@"
