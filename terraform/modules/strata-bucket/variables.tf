variable "bucket_name" {
  description = "Name of the S3 bucket holding Strata's cold tier (Parquet segments). Must be globally unique."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for SSE-KMS. When null, the AWS-managed key (aws/s3) is used."
  type        = string
  default     = null
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted. Strata uploads segments over 32 MiB in parts; a broker killed mid-upload leaves parts behind that cost storage until aborted."
  type        = number
  default     = 1
}

variable "access_log_bucket" {
  description = "Optional bucket that receives S3 server access logs for the cold-tier bucket (null: no access logging)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket. Leave false in production: the bucket holds the only copy of cold data."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
