# The cold-tier bucket: private, encrypted, TLS-only, with incomplete
# multipart uploads cleaned up. Strata itself deletes objects when retention
# expires and garbage-collects orphans, so no expiry rule is set here: an
# object's lifetime is the topic's `retention.ms`, not a bucket policy.

resource "aws_s3_bucket" "this" {
  # Versioning would keep every segment Strata deletes for retention, i.e.
  # retained bytes would never shrink; durability comes from S3 itself.
  #checkov:skip=CKV_AWS_21:Versioning would retain segments deleted by Strata's retention; S3 standard storage is already multi-AZ durable
  # Cross-region replication is a disaster-recovery choice that doubles
  # storage and transfer costs; operators opt in outside this module.
  #checkov:skip=CKV_AWS_144:Cross-region replication is an operator's DR choice, not a default
  # Access logging is available through var.access_log_bucket; it is off by
  # default because it needs a second bucket the operator owns.
  #checkov:skip=CKV_AWS_18:Access logging is optional (var.access_log_bucket)
  # Strata does not consume bucket events.
  #checkov:skip=CKV2_AWS_62:Event notifications are not used by Strata
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # One data key per bucket instead of per object: Strata writes many
    # objects, and per-object KMS calls would dominate request cost.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }
}

resource "aws_s3_bucket_logging" "this" {
  count         = var.access_log_bucket == null ? 0 : 1
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3-access/${var.bucket_name}/"
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.tls_only.json
  # The public access block must exist first or S3 may briefly evaluate the
  # policy without it.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
