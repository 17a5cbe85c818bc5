#!/usr/bin/env bash
# Runs LocalStack's S3 on this host without Docker, on 127.0.0.1:${PORT},
# creates the bucket ${BUCKET}, and prints the environment a Strata broker
# needs to use it. `run-localstack.sh stop` stops it.
#
# LocalStack needs Python 3.13 and these pins (newer versions break its S3
# provider): cbor2<6, pyopenssl<24.3, cryptography<44, service_identity.
set -euo pipefail
PORT=${PORT:-4566}
BUCKET=${BUCKET:-strata}
PY=${PYTHON:-python3.13}
STATE=${STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-localstack}
mkdir -p "$STATE"

if [ "${1:-}" = "stop" ]; then
  [ -f "$STATE/pid" ] && kill "$(cat "$STATE/pid")" 2>/dev/null || true
  rm -f "$STATE/pid"
  exit 0
fi

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: LocalStack needs Python 3.13 ($PY not found; set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x "$STATE/venv/bin/python" ]; then
  "$PY" -m venv "$STATE/venv"
fi
"$STATE/venv/bin/pip" install -q localstack 'cbor2<6' 'pyopenssl<24.3' 'cryptography<44' \
  service_identity boto3

SERVICES=s3 GATEWAY_LISTEN="127.0.0.1:$PORT" LOCALSTACK_HOST="127.0.0.1:$PORT" \
  DATA_DIR="$STATE/data" \
  "$STATE/venv/bin/python" -m localstack.runtime.main >"$STATE/localstack.log" 2>&1 &
echo $! >"$STATE/pid"

for _ in $(seq 1 120); do
  if curl -fs "http://127.0.0.1:$PORT/_localstack/health" >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/_localstack/health" >/dev/null \
  || { echo "error: LocalStack did not start; see $STATE/localstack.log" >&2; exit 1; }

"$STATE/venv/bin/python" - "$PORT" "$BUCKET" <<'PYEOF'
import sys, boto3
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
PYEOF

cat <<ENV
# LocalStack S3 is up; point Strata at it with:
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_REGION=us-east-1 \\
       AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ALLOW_HTTP=true
strata dev --object-store s3://$BUCKET/dev
ENV
