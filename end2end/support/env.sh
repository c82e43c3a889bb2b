#!/usr/bin/env bash
# The browser suite's world: a Git repository made with the git CLI (three applications, one on
# a release branch) and a sandbox cluster. Run from the repository root; replaces the previous
# run's state, then serves the sandbox in the foreground (Playwright stops it at the end).
set -euo pipefail
root=end2end/artifacts
port=${SANDBOX_PORT:-3644}
rm -rf "$root/repo" "$root/sandbox.json"
mkdir -p "$root/repo"
repo=$root/repo
git_() { git -C "$repo" -c user.name="Dev Person" -c user.email=dev@example.com "$@"; }
git_ init -q -b main
w() { mkdir -p "$repo/$(dirname "$1")"; cat > "$repo/$1"; }

guestbook() { # $1 image tag, $2 replicas
w apps/guestbook/app.yaml <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: guestbook}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: guestbook}}
spec:
  replicas: $2
  selector: {matchLabels: {app: guestbook}}
  template:
    metadata: {labels: {app: guestbook}}
    spec: {containers: [{name: web, image: "nginx:$1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: guestbook}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: e2e-secret-value}
YAML
}
guestbook 1.25 2
w apps/podinfo/base/deployment.yaml <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  replicas: 1
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec: {containers: [{name: podinfo, image: "ghcr.io/stefanprodan/podinfo:6.5.0"}]}
YAML
w apps/podinfo/base/kustomization.yaml <<'YAML'
resources: [deployment.yaml]
YAML
w apps/podinfo/overlays/prod/kustomization.yaml <<'YAML'
resources: [../../base, namespace.yaml]
namespace: podinfo
replicas: [{name: podinfo, count: 2}]
YAML
w apps/podinfo/overlays/prod/namespace.yaml <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: podinfo}
YAML
w apps/payments/app.yaml <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: payments}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: payments}
data: {currency: EUR}
YAML
git_ add -A && git_ commit -qm "guestbook, podinfo and payments"
guestbook 1.26 2
git_ commit -qam "guestbook: nginx 1.26"
git_ branch release-1.4

# Branch `signed` for the `ledger` application (project ledger: require_signed): one commit
# signed with an SSH key made here, trusted through the allowed_signers file tidemark.e2e.toml
# names. The browser suite then adds an unsigned commit to it.
mkdir -p "$root/keys"
rm -f "$root/keys/signer" "$root/keys/signer.pub" "$root/keys/allowed_signers"
rm -rf "$root/ledger-wt" "$root/payments-wt"
ssh-keygen -q -t ed25519 -N '' -C e2e-signer -f "$root/keys/signer"
echo "release-signer@example.com $(cat "$root/keys/signer.pub")" > "$root/keys/allowed_signers"
git_ checkout -q -b signed
w apps/ledger/app.yaml <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: ledger}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ledger}
data: {release: "1"}
YAML
git_ add -A
git_ -c gpg.format=ssh -c user.signingkey="$PWD/$root/keys/signer.pub" commit -q -S -m "ledger: first release (signed)"
git_ checkout -q main

exec "${TIDEMARK_BIN:-target/release/tidemark}" sandbox --listen "127.0.0.1:$port" --state "$root/sandbox.json"
