#!/usr/bin/env bash
# The real-cluster walk's world (playwright.kube.config.ts): a Git repository made with the git
# CLI holding one application, and Tidemark's settings pointing at the control plane that
# `make e2e-kube` started (scripts/kube-env.sh; its kubeconfig in $KUBECONFIG_PATH). Run from
# the repository root; replaces the previous run's state.
set -euo pipefail
root=end2end/artifacts/kube
kubeconfig="${KUBECONFIG_PATH:?the kubeconfig of the control plane, set by make e2e-kube}"
[ -f "$kubeconfig" ] || { echo "kube-world: no control plane: $kubeconfig is missing (make kube-up)" >&2; exit 1; }
rm -rf "$root"
mkdir -p "$root/repo/apps/web" "$root/db"
repo=$root/repo
git_() { git -C "$repo" -c user.name="Dev Person" -c user.email=dev@example.com "$@"; }
git_ init -q -b main
cat > "$repo/apps/web/app.yaml" <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: web-e2e}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
YAML
git_ add -A
git_ commit -qm "web: nginx 1.27, two replicas"
cat > "$root/tidemark.toml" <<TOML
# Written by end2end/support/kube-world.sh.
[server]
listen = "127.0.0.1:3500"
public_url = "http://127.0.0.1:3500"
site_root = "target/site"

[[auth.bindings]]
user = "deployer1"
role = "deployer"

[[auth.bindings]]
user = "deployer2"
role = "deployer"

[git]
cache_dir = "$root/git-cache"

[reconcile]
interval_secs = 2

[database]
url = "sqlite://$root/db/tidemark.db"

[[repositories]]
name = "examples"
url = "$repo"
fetch_interval_secs = 2

[[clusters]]
name = "kubeenv"
kubeconfig = "$kubeconfig"

[[applications]]
name = "web"
project = "demo"
repository = "examples"
path = "apps/web"
cluster = "kubeenv"
namespace = "web-e2e"

[applications.approvals]
required = 2
TOML
