#!/usr/bin/env bash
# Property-based run of schemathesis (PyPI, installed by scripts/setup.sh) against the REST API's
# own OpenAPI document (/api/v1/openapi.json), with an admin API token: every operation gets
# generated inputs (bounded: --max-examples per operation, a fixed seed), and the run fails on
# any 5xx answer or any answer the document does not describe (status code, content type, body
# schema). Part of `make test`.
#
# The server under test is a real `tidemark serve` on SQLite with a sandbox cluster, a Git
# repository made with `git` (two applications, one needing an approval, and a directory
# generator), started here and stopped at the end.
#
# Usage: scripts/api-fuzz.sh [MAX_EXAMPLES]   (default 25)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-25}"
cargo build -q -p server --bin tidemark
bin="$PWD/target/debug/tidemark"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
sandbox_port="$(free_port)"

# A repository made with git: two applications and a generated one.
repo="$tmp/repo"
mkdir -p "$repo/apps/web" "$repo/apps/api" "$repo/generated/docs"
cat >"$repo/apps/web/app.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: 'nginx:1.27'}]}
YAML
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api}\ndata: {mode: fast}\n' >"$repo/apps/api/cm.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: docs}\ndata: {k: v}\n' >"$repo/generated/docs/cm.yaml"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=Fuzz -c user.email=fuzz@example.com -c commit.gpgsign=false add -A
git -C "$repo" -c user.name=Fuzz -c user.email=fuzz@example.com -c commit.gpgsign=false commit -q -m seed

cat >"$tmp/tidemark.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$tmp/tidemark.db"
[git]
cache_dir = "$tmp/git-cache"
[auth]
admin_password = "fuzz-admin-password"
[[repositories]]
name = "demo"
url = "$repo"
fetch_interval_secs = 5
[[clusters]]
name = "sandbox"
url = "http://127.0.0.1:$sandbox_port"
[[applications]]
name = "web"
repository = "demo"
path = "apps/web"
cluster = "sandbox"
namespace = "web"
[applications.approvals]
required = 1
[[applications]]
name = "api"
repository = "demo"
path = "apps/api"
cluster = "sandbox"
namespace = "api"
sync_policy = "auto"
[[projects]]
name = "default"
source_repositories = ["demo"]
destinations = [{ cluster = "sandbox", namespace = "*" }]
[[generators]]
name = "generated"
repository = "demo"
path_glob = "generated/*"
template = { cluster = "sandbox", namespace = "gen-{{name}}" }
TOML

export RUST_LOG=warn
"$bin" sandbox --listen "127.0.0.1:$sandbox_port" >"$tmp/sandbox.log" 2>&1 &
pids+=($!)
"$bin" --config "$tmp/tidemark.toml" migrate >/dev/null
token="$("$bin" --config "$tmp/tidemark.toml" token create --name fuzz --role admin)"
"$bin" --config "$tmp/tidemark.toml" serve >"$tmp/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.3
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$tmp/server.log" >&2; exit 1; }

# Log streams (SSE, text) and the OpenAPI document itself are left out of generation.
status=0
schema="http://127.0.0.1:$port/api/v1/openapi.json"
if [ -n "${TIDEMARK_FUZZ_SCHEMA:-}" ]; then schema="$TIDEMARK_FUZZ_SCHEMA"; fi
# The console script beside this python3 (a pyenv shim may not exist until a rehash).
st="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st"
[ -x "$st" ] || st=st
"$st" run "$schema" --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --seed 7 --workers 1 --request-timeout 30 \
  --exclude-path /api/v1/openapi.json \
  --no-color --suppress-health-check all || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines) ---" >&2
  tail -n 40 "$tmp/server.log" >&2
fi
exit "$status"
