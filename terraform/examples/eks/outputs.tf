output "cluster_name" {
  description = "EKS cluster name (for `aws eks update-kubeconfig --name ...`)."
  value       = local.cluster_name
}

output "object_store_url" {
  description = "Value for Strata's object_store setting (k8s/overlays/aws/strata.toml)."
  value       = "s3://${module.bucket.bucket_name}/${var.bucket_prefix}"
}

output "aws_region" {
  description = "Value for Strata's aws_region setting."
  value       = var.region
}

output "broker_role_arn" {
  description = "Annotate the `strata` service account with eks.amazonaws.com/role-arn set to this (k8s/overlays/aws/serviceaccount-irsa.yaml)."
  value       = module.irsa.role_arn
}

output "update_kubeconfig" {
  description = "Command that points kubectl at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${local.cluster_name}"
}
