variable "name" {
  description = "Name of the IAM role and policy (e.g. \"strata-prod-broker\")."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the cold-tier bucket."
  type        = string
}

variable "prefix" {
  description = "Key prefix inside the bucket that the brokers own, without leading or trailing slash; matches the object store URL s3://<bucket>/<prefix>. Access is limited to it."
  type        = string

  validation {
    condition     = length(var.prefix) > 0 && !startswith(var.prefix, "/") && !endswith(var.prefix, "/")
    error_message = "prefix must be non-empty and have no leading or trailing slash."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key encrypting the bucket, if any; the role may use it for data keys only."
  type        = string
  default     = null
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (IRSA)."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (with or without https://)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the brokers' service account."
  type        = string
  default     = "strata"
}

variable "service_account" {
  description = "Name of the brokers' Kubernetes service account."
  type        = string
  default     = "strata"
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
