output "role_arn" {
  description = "IAM role ARN; annotate the brokers' service account with eks.amazonaws.com/role-arn set to it."
  value       = aws_iam_role.this.arn
}

output "policy_arn" {
  description = "ARN of the least-privilege S3 policy (attach it elsewhere, e.g. to an S3-compatible gateway's role, if needed)."
  value       = aws_iam_policy.access.arn
}

output "service_account_annotation" {
  description = "The annotation to put on the Kubernetes service account."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.this.arn }
}
