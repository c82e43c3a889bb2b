#!/usr/bin/env bash
# Regenerates the sandbox's OpenAPI v3 documents (server/src/sandbox/openapi/*.json) from a
# running Kubernetes control plane: for each group-version the sandbox serves, the real
# server's /openapi/v3/<gv> document, cut down to what the sandbox needs (see docs/sandbox.md):
#   - components.schemas: only the schemas reachable (through $ref) from the kinds the sandbox
#     serves and from the kept paths;
#   - paths: only those of the served resources (no watch paths), operations without tags;
#   - no `description` anywhere; operations keep their parameters, kind and JSON response;
#   - a schema published identically by several group-versions is stored once (shared.json).
#
# Usage: scripts/sandbox-openapi.sh [KUBECONFIG]   (default: $KUBECONFIG, then
#        target/kubeenv/run/kubeconfig as `make kube-up` leaves it)
#
# Keep KINDS in step with server/src/sandbox/kinds.rs (`builtins`); the sandbox's unit tests
# fail when a built-in kind has no schema here.
set -euo pipefail

cd "$(dirname "$0")/.."
kubeconfig="${1:-${KUBECONFIG:-target/kubeenv/run/kubeconfig}}"
out=server/src/sandbox/openapi
mkdir -p "$out"

# group-version path, file name, served kinds:plurals
KINDS=(
  "api/v1 core-v1 Namespace:namespaces ConfigMap:configmaps Secret:secrets Service:services ServiceAccount:serviceaccounts Pod:pods PersistentVolumeClaim:persistentvolumeclaims"
  "apis/apps/v1 apps-v1 Deployment:deployments StatefulSet:statefulsets DaemonSet:daemonsets ReplicaSet:replicasets"
  "apis/batch/v1 batch-v1 Job:jobs CronJob:cronjobs"
  "apis/networking.k8s.io/v1 networking.k8s.io-v1 Ingress:ingresses"
  "apis/rbac.authorization.k8s.io/v1 rbac.authorization.k8s.io-v1 Role:roles RoleBinding:rolebindings ClusterRole:clusterroles ClusterRoleBinding:clusterrolebindings"
  "apis/apiextensions.k8s.io/v1 apiextensions.k8s.io-v1 CustomResourceDefinition:customresourcedefinitions"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
version="$(kubectl --kubeconfig "$kubeconfig" version -o json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
args=()
for line in "${KINDS[@]}"; do
  read -r gv file kinds <<<"$line"
  kubectl --kubeconfig "$kubeconfig" get --raw "/openapi/v3/$gv" >"$tmp/$file.json"
  args+=("$gv|$file|$kinds")
done
rm -f "$out"/*.json
python3 - "$tmp" "$out" "$version" "${args[@]}" <<'PY'
import collections, json, re, sys

tmp, out, version, *specs = sys.argv[1:]

def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("description", "tags")}
    if isinstance(x, list):
        return [strip(i) for i in x]
    return x

def refs(x, found):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v.rsplit("/", 1)[-1])
            else:
                refs(v, found)
    elif isinstance(x, list):
        for i in x:
            refs(i, found)
    return found

def operation(op):
    # What clients read from an operation: kubectl looks for the query parameters it wants to
    # send (fieldValidation, dryRun...) on the PATCH of a kind's path.
    kept = {k: v for k, v in op.items()
            if k in ("operationId", "parameters", "x-kubernetes-action", "x-kubernetes-group-version-kind")}
    ok = op.get("responses", {}).get("200") or op.get("responses", {}).get("201")
    if ok and "application/json" in ok.get("content", {}):
        kept["responses"] = {"200": {"content": {"application/json": ok["content"]["application/json"]}}}
    else:
        kept["responses"] = {"200": {}}
    return kept

docs = {}
for spec in specs:
    gv, file, kinds = spec.split("|")
    doc = json.load(open(f"{tmp}/{file}.json"))
    kinds = dict(k.split(":") for k in kinds.split())
    group, _, ver = gv.split("/", 1)[1].rpartition("/")
    paths = {}
    for p, item in doc["paths"].items():
        m = re.fullmatch(r"/apis?/%s(?:/namespaces/\{namespace\})?/([a-z.]+)(?:/\{name\}(?:/(status|scale))?)?"
                         % re.escape(gv.split("/", 1)[1]), p)
        if not m or m.group(1) not in kinds.values():
            continue
        item = strip(item)
        paths[p] = {k: (operation(v) if k != "parameters" else v) for k, v in item.items()}
    schemas = doc["components"]["schemas"]
    roots = {n for n, s in schemas.items()
             if any(g.get("group") == group and g.get("version") == ver and g.get("kind") in kinds
                    for g in s.get("x-kubernetes-group-version-kind", []))}
    served = {g["kind"] for n in roots for g in schemas[n]["x-kubernetes-group-version-kind"]}
    if set(kinds) - served:
        sys.exit(f"{gv}: no schema for {sorted(set(kinds) - served)}")
    keep, todo = set(), list(roots | refs(paths, set()))
    while todo:
        name = todo.pop()
        if name in keep or name not in schemas:
            continue
        keep.add(name)
        todo.extend(refs(schemas[name], set()))
    docs[file] = (gv, doc, paths, {n: strip(schemas[n]) for n in sorted(keep)})

# A schema published identically by several group-versions is stored once, in shared.json.
variants = collections.defaultdict(collections.Counter)
bodies = {}
for _, _, _, schemas in docs.values():
    for n, s in schemas.items():
        key = json.dumps(s, sort_keys=True)
        variants[n][key] += 1
        bodies[key] = s
shared = {n: bodies[c.most_common(1)[0][0]] for n, c in variants.items()}

def lines(d):
    # One entry per line: small diffs when a schema changes.
    return "{\n" + ",\n".join(json.dumps(k) + ":" + json.dumps(v, sort_keys=True, separators=(",", ":"))
                              for k, v in sorted(d.items())) + "\n}"

with open(f"{out}/shared.json", "w") as f:
    f.write(lines(shared) + "\n")
for file, (gv, doc, paths, schemas) in docs.items():
    own = {n: s for n, s in schemas.items() if s != shared[n]}
    body = ('{"openapi":%s,\n"info":%s,\n"x-tidemark-shared-schemas":%s,\n"components":{"schemas":%s},\n"paths":%s}\n' % (
        json.dumps(doc["openapi"]),
        json.dumps({"title": doc["info"]["title"], "version": doc["info"]["version"],
                    "x-tidemark-source": f"kube-apiserver {version} via scripts/sandbox-openapi.sh"}),
        json.dumps(sorted(n for n in schemas if n not in own)),
        lines(own), lines(paths)))
    with open(f"{out}/{file}.json", "w") as f:
        f.write(body)
    print(f"{gv}: {len(schemas)} schemas ({len(own)} own), {len(paths)} paths")
PY
wc -c "$out"/*.json
