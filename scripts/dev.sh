#!/usr/bin/env bash
# Builds Strata and runs the single-node profile (`strata dev`) in the
# foreground: Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:9644, data under
# ./strata-data. Extra arguments go to `strata dev` (e.g. --listen 0.0.0.0:9092).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
cargo build --release --bin strata
exec ./target/release/strata dev "$@"
