#!/usr/bin/env bash
# The server's import rules (docs/architecture.md), checked on every `make lint`: each rule is a
# directory of server/src and what its files may not name. Comments and docs are not exempt —
# naming a layer's items in a doc link is a dependency too. Prints every violation, exits 1.
set -euo pipefail
cd "$(dirname "$0")/../server/src"

fail=0
# rule DIR PATTERN WHY
rule() {
  local dir=$1 pattern=$2 why=$3 hits
  hits=$(grep -rnE "$pattern" "$dir" --include='*.rs' || true)
  if [[ -n "$hits" ]]; then
    echo "architecture: $dir must not $why:" >&2
    echo "$hits" | sed 's/^/  /' >&2
    fail=1
  fi
}

rule domain 'crate::(auth|cluster|config|diff|engine|git|http|notify|reconcile|render|sandbox|startup|state|store|telemetry|secrets|demo)\b|\b(sqlx|axum|kube|git2|tokio|leptos)::' \
  "import anything but other domain modules (pure types and decisions; no I/O crates)"
rule engine '\baxum\b|crate::http\b|\bAppError\b' \
  "import axum or the HTTP layer (its errors are EngineError; http maps them)"
rule store 'crate::(notify|git|engine|http|auth|reconcile|cluster|render|startup)\b' \
  "import notify, git, the engine, HTTP, auth, reconcile, cluster or render (it is persistence only)"
for dir in reconcile cluster diff render git notify; do
  rule "$dir" 'crate::(http|engine|startup|auth)\b|\baxum::' \
    "import HTTP, the engine, auth or axum (adapters and leaves do not know their callers)"
done
rule auth 'crate::(http|engine)\b' \
  "import the HTTP layer or the engine (shared state lives in crate::state)"
rule state.rs 'crate::(http|auth|engine)\b' \
  "import the layers that share it"

if [[ $fail -eq 0 ]]; then
  echo "architecture: import rules hold (docs/architecture.md)"
fi
exit $fail
