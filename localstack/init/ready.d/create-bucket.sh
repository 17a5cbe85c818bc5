#!/usr/bin/env bash
# LocalStack init hook (runs when S3 is ready): the bucket the brokers use.
set -euo pipefail
awslocal s3 mb "s3://${STRATA_BUCKET:-strata}" || true
