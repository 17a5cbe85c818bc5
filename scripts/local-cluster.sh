#!/usr/bin/env bash
# The cluster profile on one host, without Docker: etcd, an S3 server (moto)
# and three Strata brokers, all on free loopback ports.
#
#   scripts/local-cluster.sh up       start everything, wait until ready, print
#                                     the bootstrap servers and the S3 settings
#   scripts/local-cluster.sh status   what is running
#   scripts/local-cluster.sh down     stop everything `up` started and delete
#                                     its state (KEEP_DATA=1 keeps the state dir)
#
# Environment: STATE_DIR (default ./.strata-local), STRATA_BIN (default: build
# target/release/strata), BROKERS (default 3), CLUSTER (default local),
# OBJECT_STORE (default s3://strata/<cluster> on the moto server; e.g.
# file:///dir for a directory shared by the brokers). STRATA_* settings in the
# environment reach every broker.
# Logs are in $STATE_DIR/logs; `source $STATE_DIR/env` exports
# STRATA_BOOTSTRAP and the AWS_* variables for the S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE_DIR=${STATE_DIR:-$PWD/.strata-local}
BROKERS=${BROKERS:-3}
CLUSTER=${CLUSTER:-local}
BUCKET=strata

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.2 s, bounded.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local i
  for i in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "error: $what not ready after ${secs}s; see $STATE_DIR/logs" >&2
  return 1
}

http_ok() {
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
}

# start NAME COMMAND...: runs COMMAND in its own session, logging to
# logs/NAME.log, and records its pid.
start() {
  local name=$1
  shift
  setsid "$@" >"$STATE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/pids/$name"
}

stop_pid() {
  local file=$1 pid i
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "warning: $(basename "$file") did not stop within 30s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

cmd_down() {
  [ -d "$STATE_DIR/pids" ] || { echo "nothing running (no $STATE_DIR)"; return 0; }
  # Brokers first (they release their leases in etcd), then etcd and S3.
  local f
  for f in "$STATE_DIR"/pids/broker-*; do [ -e "$f" ] && stop_pid "$f"; done
  stop_pid "$STATE_DIR/pids/etcd"
  stop_pid "$STATE_DIR/pids/s3"
  if [ "${KEEP_DATA:-0}" = 1 ]; then
    echo "stopped; state kept in $STATE_DIR"
  else
    rm -rf "$STATE_DIR"
    echo "stopped; removed $STATE_DIR"
  fi
}

cmd_status() {
  [ -d "$STATE_DIR/pids" ] || { echo "not running"; return 1; }
  local f rc=0
  for f in "$STATE_DIR"/pids/*; do
    if alive "$f"; then echo "$(basename "$f"): running (pid $(cat "$f"))"
    else echo "$(basename "$f"): stopped"; rc=1; fi
  done
  [ -f "$STATE_DIR/env" ] && grep STRATA_BOOTSTRAP "$STATE_DIR/env"
  return $rc
}

cmd_up() {
  if [ -d "$STATE_DIR/pids" ] && ls "$STATE_DIR"/pids/* >/dev/null 2>&1; then
    echo "error: already running from $STATE_DIR; run '$0 down' first" >&2
    exit 1
  fi
  apt_install etcd-server
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install -q 'moto[server]>=5'
  if [ -z "${STRATA_BIN:-}" ]; then
    need_cargo
    cargo build --release --bin strata -q
    STRATA_BIN=$PWD/target/release/strata
  fi
  mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids"
  # Anything that fails from here on stops what was already started.
  trap 'echo "error: start-up failed; stopping" >&2; cmd_down >/dev/null' ERR

  local etcd_client etcd_peer s3_port
  etcd_client=$(free_port)
  etcd_peer=$(free_port)
  s3_port=$(free_port)
  start etcd etcd --name local --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer"
  start s3 python3 -m moto.server -H 127.0.0.1 -p "$s3_port"
  wait_for etcd 30 http_ok "http://127.0.0.1:$etcd_client/health"
  wait_for "S3 server" 30 http_ok "http://127.0.0.1:$s3_port/"
  python3 - "$s3_port" "$BUCKET" <<'PY'
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
urllib.request.urlopen(req, timeout=5)
PY

  cat >"$STATE_DIR/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ALLOW_HTTP=true
export STRATA_ETCD=http://127.0.0.1:$etcd_client
ENV
  # shellcheck disable=SC1091
  source "$STATE_DIR/env"

  local i kafka http bootstrap="" racks=(zone-a zone-b zone-c)
  for i in $(seq 1 "$BROKERS"); do
    kafka=$(free_port)
    http=$(free_port)
    mkdir -p "$STATE_DIR/broker-$i"
    STRATA_RACK=${racks[$(((i - 1) % 3))]} start "broker-$i" "$STRATA_BIN" broker \
      --id "$i" --cluster "$CLUSTER" --etcd "$STRATA_ETCD" \
      --data-dir "$STATE_DIR/broker-$i" --listen "127.0.0.1:$kafka" \
      --grpc "127.0.0.1:$(free_port)" --http "127.0.0.1:$http" \
      --object-store "${OBJECT_STORE:-s3://$BUCKET/$CLUSTER}"
    echo "http://127.0.0.1:$http" >"$STATE_DIR/broker-$i/http"
    bootstrap+="${bootstrap:+,}127.0.0.1:$kafka"
  done
  for i in $(seq 1 "$BROKERS"); do
    wait_for "broker $i" 60 http_ok "$(cat "$STATE_DIR/broker-$i/http")/readyz"
  done
  echo "export STRATA_BOOTSTRAP=$bootstrap" >>"$STATE_DIR/env"
  trap - ERR

  cat <<MSG
Strata cluster profile is up: etcd, S3 (moto) and $BROKERS brokers.
  bootstrap servers: $bootstrap
  etcd:              $STRATA_ETCD (prefix /strata/$CLUSTER/)
  S3:                $AWS_ENDPOINT_URL, bucket $BUCKET, objects under $CLUSTER/
  logs:              $STATE_DIR/logs
Try:
  source $STATE_DIR/env
  $STRATA_BIN topic create --topic demo --partitions 3 --bootstrap \$STRATA_BOOTSTRAP
  echo hello | $STRATA_BIN produce --topic demo --bootstrap \$STRATA_BOOTSTRAP
  $STRATA_BIN consume --topic demo --from-beginning --timeout-ms 2000 --bootstrap \$STRATA_BOOTSTRAP
Stop with: $0 down
MSG
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|status|down" >&2
    exit 2
    ;;
esac
