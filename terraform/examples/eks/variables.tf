variable "region" {
  description = "AWS region of the cluster and the cold-tier bucket (same region: no cross-region transfer)."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name prefix for everything created (cluster, node groups, bucket prefix, IAM role)."
  type        = string
  default     = "strata"
}

variable "existing_cluster_name" {
  description = "Name of an existing EKS cluster to deploy into. When null, a VPC and an EKS cluster are created."
  type        = string
  default     = null
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version for a created cluster."
  type        = string
  default     = "1.31"
}

variable "vpc_cidr" {
  description = "CIDR of the created VPC."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Three availability zones; brokers and etcd members spread one per zone."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "Give exactly three availability zones (one broker and one etcd member per zone)."
  }
}

variable "broker_instance_type" {
  description = "Instance type for broker nodes: NVMe instance storage (i4i, i3en) holds the hot tier."
  type        = string
  default     = "i4i.xlarge"

  validation {
    condition     = can(regex("^(i4i|i3en|i4g|im4gn|is4gen)\\.", var.broker_instance_type))
    error_message = "Broker nodes need local NVMe instance storage: use an i4i, i3en, i4g, im4gn or is4gen type."
  }
}

variable "broker_count" {
  description = "Number of broker nodes (one broker pod per node)."
  type        = number
  default     = 3
}

variable "system_instance_type" {
  description = "Instance type for the system node group (etcd, cluster add-ons)."
  type        = string
  default     = "m6i.large"
}

variable "bucket_name" {
  description = "Globally unique name of the cold-tier bucket."
  type        = string
}

variable "bucket_prefix" {
  description = "Key prefix of this cluster's objects in the bucket; the object store URL is s3://<bucket_name>/<bucket_prefix>."
  type        = string
  default     = "strata"
}

variable "kms_key_arn" {
  description = "Optional customer-managed KMS key for the bucket."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Kubernetes namespace the k8s/overlays/aws overlay deploys into."
  type        = string
  default     = "strata"
}

variable "tags" {
  description = "Tags applied to every AWS resource."
  type        = map(string)
  default     = { "app.kubernetes.io/part-of" = "strata" }
}
