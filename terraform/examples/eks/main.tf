# Example root module: the AWS side of a Strata cluster.
#
# - the cold-tier bucket (modules/strata-bucket);
# - a least-privilege IRSA role for the brokers (modules/strata-irsa);
# - unless existing_cluster_name is set, a VPC and an EKS cluster with two
#   managed node groups: `brokers` on NVMe instances (i4i/i3en) whose
#   instance-store disks are striped (RAID0) and used for the kubelet's
#   ephemeral storage, so the brokers' emptyDir hot tier lives on NVMe; and
#   `system` for etcd and add-ons.
#
# Then deploy with `kubectl apply -k k8s/overlays/aws` after setting the
# values this module outputs (see docs/deploy.md).

locals {
  create_cluster = var.existing_cluster_name == null
  cluster_name   = local.create_cluster ? var.name : var.existing_cluster_name
  role_name      = "${var.name}-broker"

  # AL2023 nodeadm: stripe the instance-store NVMe disks and put the kubelet
  # and container runtime on them, so emptyDir volumes are NVMe-backed.
  nvme_nodeconfig = <<-EOT
    apiVersion: node.eks.aws/v1alpha1
    kind: NodeConfig
    spec:
      instance:
        localStorage:
          strategy: RAID0
  EOT
}

module "vpc" {
  # Registry module pinned to a version range; a commit hash applies to git sources.
  #checkov:skip=CKV_TF_1:Terraform Registry module pinned by version, not a git source
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.13"
  count   = local.create_cluster ? 1 : 0

  name            = var.name
  cidr            = var.vpc_cidr
  azs             = var.availability_zones
  private_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 48 + i)]

  enable_nat_gateway = true
  # One NAT gateway per zone keeps a zone outage from cutting the others off.
  one_nat_gateway_per_az = true

  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }
  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
}

# A gateway endpoint keeps S3 traffic (every offload and cold read) off the
# NAT gateways: no per-GB NAT charge, no internet path.
resource "aws_vpc_endpoint" "s3" {
  count             = local.create_cluster ? 1 : 0
  vpc_id            = module.vpc[0].vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = module.vpc[0].private_route_table_ids
}

module "eks" {
  # Registry module pinned to a version range; a commit hash applies to git sources.
  #checkov:skip=CKV_TF_1:Terraform Registry module pinned by version, not a git source
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.24"
  count   = local.create_cluster ? 1 : 0

  cluster_name    = var.name
  cluster_version = var.kubernetes_version
  vpc_id          = module.vpc[0].vpc_id
  subnet_ids      = module.vpc[0].private_subnets
  enable_irsa     = true

  cluster_endpoint_public_access           = true
  enable_cluster_creator_admin_permissions = true

  eks_managed_node_groups = {
    brokers = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = [var.broker_instance_type]
      min_size       = var.broker_count
      max_size       = var.broker_count + 1
      desired_size   = var.broker_count
      labels         = { "strata.io/role" = "broker" }
      taints = {
        brokers = { key = "strata.io/role", value = "broker", effect = "NO_SCHEDULE" }
      }
      cloudinit_pre_nodeadm = [{
        content_type = "application/node.eks.aws"
        content      = local.nvme_nodeconfig
      }]
    }
    system = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = [var.system_instance_type]
      min_size       = 3
      max_size       = 6
      desired_size   = 3
    }
  }
}

data "aws_eks_cluster" "existing" {
  count = local.create_cluster ? 0 : 1
  name  = var.existing_cluster_name
}

data "aws_iam_openid_connect_provider" "existing" {
  count = local.create_cluster ? 0 : 1
  url   = data.aws_eks_cluster.existing[0].identity[0].oidc[0].issuer
}

locals {
  oidc_provider_arn = local.create_cluster ? module.eks[0].oidc_provider_arn : data.aws_iam_openid_connect_provider.existing[0].arn
  oidc_issuer_url   = local.create_cluster ? module.eks[0].cluster_oidc_issuer_url : data.aws_eks_cluster.existing[0].identity[0].oidc[0].issuer
}

module "bucket" {
  source      = "../../modules/strata-bucket"
  bucket_name = var.bucket_name
  kms_key_arn = var.kms_key_arn
  tags        = var.tags
}

module "irsa" {
  source            = "../../modules/strata-irsa"
  name              = local.role_name
  bucket_arn        = module.bucket.bucket_arn
  prefix            = var.bucket_prefix
  kms_key_arn       = var.kms_key_arn
  oidc_provider_arn = local.oidc_provider_arn
  oidc_issuer_url   = local.oidc_issuer_url
  namespace         = var.namespace
  service_account   = "strata"
  tags              = var.tags
}
