# Shared helpers for the project scripts. Everything here is idempotent: it
# installs only what is missing, so it is cheap on a machine already set up.

APT_UPDATED=0
apt_install() {
  # apt_install PACKAGE...: installs the missing ones (as root, non-interactive).
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "error: need root to install: ${missing[*]}" >&2
    return 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo (Rust 1.85 or newer) is required; install it with rustup" >&2
    exit 1
  fi
  # C toolchain for crates that build C code (zstd, lz4), protoc for the
  # gRPC/etcd protocol definitions.
  command -v cc >/dev/null 2>&1 || apt_install build-essential
  command -v protoc >/dev/null 2>&1 || apt_install protobuf-compiler
}

need_python_clients() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  if ! python3 -c "import confluent_kafka, kafka, pytest, pyarrow, moto, boto3, duckdb, polars, datafusion, yaml, hcl2, kubernetes_validate, yamllint" >/dev/null 2>&1; then
    python3 -m pip install -q -r tests/requirements.txt
  fi
}

# Deployment validation tools. checkov pins dependencies (boto3, packaging)
# that clash with the test clients, so it lives in its own virtualenv.
CHECKOV_VENV=${CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-checkov}
need_deploy_tools() {
  if ! python3 -c "import hcl2, kubernetes_validate, yamllint" >/dev/null 2>&1; then
    python3 -m pip install -q -r tests/requirements.txt
  fi
  if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
    python3 -m venv "$CHECKOV_VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$CHECKOV_VENV"; }
    "$CHECKOV_VENV/bin/pip" install -q 'checkov==3.3.30'
  fi
  export STRATA_CHECKOV="$CHECKOV_VENV/bin/checkov"
}

need_rdkafka_performance() {
  # Prints the path of librdkafka's load tool, rdkafka_performance, built once
  # (under target/bench/rdkafka) from the C sources that the rdkafka-sys crate
  # ships on crates.io: the same librdkafka as confluent-kafka and kcat use.
  local dir="$PWD/target/bench/rdkafka"
  local bin="$dir/src/examples/rdkafka_performance"
  if [ -x "$bin" ]; then echo "$bin"; return 0; fi
  need_cargo
  command -v make >/dev/null 2>&1 || apt_install build-essential
  mkdir -p "$dir/fetch/src"
  # Its own `[workspace]`: it sits under the project's target/, inside the
  # project's workspace directory, and cargo refuses a stray member.
  printf '[package]\nname = "rdkafka-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrdkafka-sys = "=4.10.0"\n[workspace]\n' >"$dir/fetch/Cargo.toml"
  echo 'fn main() {}' >"$dir/fetch/src/main.rs"
  (cd "$dir/fetch" && cargo fetch -q) >&2
  local src
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-4.10.0*/librdkafka | head -1)
  [ -d "$src" ] || { echo "error: rdkafka-sys sources not found after cargo fetch" >&2; return 1; }
  rm -rf "$dir/src" && cp -r "$src" "$dir/src"
  (cd "$dir/src" \
    && ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl --disable-zstd --disable-lz4-ext \
    && make -j"$(nproc)" -C src && make -C examples rdkafka_performance) >"$dir/build.log" 2>&1 \
    || { echo "error: building rdkafka_performance failed; see $dir/build.log" >&2; return 1; }
  echo "$bin"
}

# json EXPR: evaluates EXPR (Python, over `d`) on the last line of stdin,
# a JSON object (what `strata bench --json` prints last).
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print($1)"; }

# series HTTP SELECTOR...: from one scrape of the /metrics of the broker
# whose HTTP listener is HTTP (host:port, as start_broker records it, or
# http://host:port, as local-cluster.sh does), for each SELECTOR the value
# of that series (a name with its labels, e.g. `x_count` or
# `x_bucket{le="0.01"}`), or, for a SELECTOR ending in `{`, the sum of all
# of that metric's labelled series; "?" where there is none.
# Space-separated, in order.
series() {
  python3 - "http://${1#http://}/metrics" "${@:2}" <<'PY'
import sys, urllib.request
url, selectors = sys.argv[1], sys.argv[2:]
lines = urllib.request.urlopen(url).read().decode().splitlines()
def value(sel):
    match = (lambda l: l.startswith(sel)) if sel.endswith("{") else (lambda l: l.startswith(sel + " "))
    vals = [float(l.split()[1]) for l in lines if match(l)]
    if not vals:
        return "?"
    v = sum(vals)
    return str(int(v)) if v.is_integer() else repr(v)
print(" ".join(value(sel) for sel in selectors))
PY
}

# settle: the page cache written back and a second's quiet, before a
# measurement that a previous one's writeback would disturb.
settle() { sync; sleep 1; }

# metric HTTP NAME: the value of metric NAME of the broker whose HTTP
# listener is HTTP ("?" if it reports none).
metric() { series "$1" "$2"; }

# over HTTP NAME LABELS SECONDS: how many observations of histogram NAME
# (the series with LABELS, `key="value"` or empty) were above SECONDS (one
# of its bucket bounds), from one scrape of the broker whose HTTP
# listener is HTTP: the count less that bucket (0 if there is no series).
over() {
  local count within
  if [ -n "$3" ]; then
    read -r count within <<<"$(series "$1" "$2_count{$3}" "$2_bucket{$3,le=\"$4\"}")"
  else
    read -r count within <<<"$(series "$1" "$2_count" "$2_bucket{le=\"$4\"}")"
  fi
  if [ "$count" = "?" ] || [ "$within" = "?" ]; then echo 0; else echo $((count - within)); fi
}

# slow_requests HTTP API SECONDS: how many requests of type API (Produce,
# Fetch, ...) the broker whose HTTP listener is HTTP took longer than
# SECONDS (a bucket bound of strata_request_duration_seconds) to answer.
slow_requests() { over "$1" strata_request_duration_seconds "api=\"$2\"" "$3"; }

# late_wakeups HTTP SECONDS: how many times a task woken on the broker's
# async runtime (its probe, every 10 ms) started more than SECONDS (a
# bucket bound of strata_runtime_wakeup_delay_seconds) late.
late_wakeups() { over "$1" strata_runtime_wakeup_delay_seconds "" "$2"; }

# errors_returned HTTP: how many error codes the broker whose HTTP
# listener is HTTP has sent to clients (all codes together).
errors_returned() {
  local n
  n=$(series "$1" 'strata_errors_returned_total{')
  echo "${n/\?/0}"
}

# wait_offloaded HTTP: waits (up to 300 s) until the broker whose HTTP
# listener is HTTP reports no segment waiting for offload.
wait_offloaded() {
  local backlog
  for _ in $(seq 1 300); do
    backlog=$(metric "$1" strata_offload_backlog_segments)
    [ "$backlog" = 0 ] && return 0
    sleep 1
  done
}

# start_broker DIR BINARY ENV [ARGS...]: starts `BINARY dev` in the
# background (data and log under DIR, free loopback ports, ENV a list of
# NAME=value words, ARGS passed on, e.g. `--set key=value`), waits until it
# listens, and writes its pid, Kafka address and HTTP address to DIR/pid,
# DIR/kafka and DIR/http. Fails, showing the log, if it did not start.
start_broker() {
  local dir=$1 bin=$2 envs=$3
  shift 3
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # ENV is a list of NAME=value words
  env $envs "$bin" dev --data-dir "$dir/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 "$@" \
    >"$dir/broker.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    grep -q "http listening on" "$dir/broker.log" 2>/dev/null && break
    sleep 0.1
  done
  # (No match is not an error here: it is reported below.)
  { grep -o "kafka listening on [0-9.:]*" "$dir/broker.log" || true; } | awk '{print $4}' >"$dir/kafka"
  { grep -o "http listening on [0-9.:]*" "$dir/broker.log" || true; } | awk '{print $4}' >"$dir/http"
  if [ ! -s "$dir/kafka" ] || [ ! -s "$dir/http" ]; then
    echo "error: broker did not start; see $dir/broker.log" >&2
    cat "$dir/broker.log" >&2
    return 1
  fi
}

# ab_brokers NAME [ARGS...]: what the A/B scripts share. Builds this tree's
# release strata ($S), takes binaries $SA and $SB (default $S) with
# environments $EA and $EB, makes $WORK (removed, and the brokers stopped,
# on exit) and starts brokers A and B under $WORK/A and $WORK/B with ARGS.
ab_brokers() {
  need_cargo
  cargo build --release --bin strata -q
  S=$PWD/target/release/strata
  SA=${SA:-$S} SB=${SB:-$S}
  WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/strata-$1.XXXXXX")
  shift
  trap ab_cleanup EXIT
  start_broker "$WORK/A" "$SA" "${EA:-}" "$@"
  start_broker "$WORK/B" "$SB" "${EB:-}" "$@"
}
ab_cleanup() {
  for f in "$WORK"/*/pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
# ab_cpu A|B: that broker's CPU time so far, in seconds.
ab_cpu() { awk '{printf "%.2f\n", ($14 + $15) / 100}' "/proc/$(cat "$WORK/$1/pid")/stat"; }
# ab_rounds ROUNDS FN: ROUNDS rounds, each running `FN A ROUND` then
# `FN B ROUND` (FN prints M records/s), and prints each round's two rates
# with the CPU time each broker spent during its run.
ab_rounds() {
  local rounds=$1 fn=$2 i x c0 c1 rate line
  echo "round: A M records/s (broker CPU s) | B M records/s (broker CPU s)"
  for i in $(seq 1 "$rounds"); do
    line="$i:"
    for x in A B; do
      c0=$(ab_cpu $x)
      rate=$("$fn" $x "$i")
      c1=$(ab_cpu $x)
      line="$line $x $rate ($(python3 -c "print('%.2f' % ($c1 - $c0))"))"
    done
    echo "$line"
  done
}

# librdkafka's load tool as the matrix (scripts/bench.sh) runs it, shared
# with scripts/bench-group-ab.sh so that the A/B measures the same load.
# rk_produce_load RP BOOTSTRAP TOPIC SIZE COUNT [FLAGS...]: acks=1, linger
# 5 ms, 1 MB batches.
rk_produce_load() {
  "$1" -P -t "$3" -b "$2" -s "$4" -c "$5" -a 1 -X linger.ms=5 -X batch.size=1000000 \
    -X queue.buffering.max.messages=2000000 -q "${@:6}"
}
# rk_group_consume RP BOOTSTRAP TOPIC GROUP COUNT [FLAGS...]: a consumer
# group's consume of COUNT records from the beginning (given up after
# 120 s, should the records never all arrive).
rk_group_consume() {
  local rp=$1 b=$2 t=$3 g=$4 n=$5
  shift 5
  timeout 120 "$rp" -G "$g" -t "$t" -b "$b" -o beginning -c "$n" -X auto.offset.reset=earliest "$@" -q
}
# rk_rate: the last msgs/s figure of rdkafka_performance's output (stdin).
rk_rate() { grep -o '[0-9]* msgs/s' | tail -1 | awk '{print $1}'; }

# stall_probe SECONDS: sleeps 1 ms at a time for SECONDS and prints the
# most any wake-up came late, in ms: how long this machine left a ready
# process without a CPU (a VM's vCPU descheduled by its host, say).
stall_probe() {
  python3 -c '
import sys, time
end = time.monotonic() + float(sys.argv[1])
worst = 0.0
while time.monotonic() < end:
    t = time.monotonic()
    time.sleep(0.001)
    worst = max(worst, time.monotonic() - t - 0.001)
print("%.1f" % (worst * 1000))
' "$1"
}
