# Least-privilege access for the brokers: list, read, write and delete
# objects under one prefix of one bucket, and nothing else; assumable only by
# one Kubernetes service account through the cluster's OIDC provider (IRSA).
#
# What Strata calls, and why each permission is here:
#   s3:ListBucket (prefix only)   segment listing, orphan GC
#   s3:GetObject                  cold reads (ranged), HEAD
#   s3:PutObject                  offload, incl. multipart create/part/complete
#   s3:DeleteObject               retention, DeleteRecords, topic deletion, GC
#   s3:AbortMultipartUpload       cleanup of a failed multipart offload

locals {
  issuer = trimprefix(var.oidc_issuer_url, "https://")
}

data "aws_iam_policy_document" "access" {
  statement {
    sid       = "ListPrefix"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.prefix, "${var.prefix}/*"]
    }
  }

  statement {
    sid = "ObjectsUnderPrefix"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]
    resources = ["${var.bucket_arn}/${var.prefix}/*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "BucketKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "access" {
  name        = var.name
  description = "Strata brokers: objects under s3 prefix ${var.prefix}/ only"
  policy      = data.aws_iam_policy_document.access.json
  tags        = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.name
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy_attachment" "access" {
  role       = aws_iam_role.this.name
  policy_arn = aws_iam_policy.access.arn
}
