#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (3 fake nodes on which pods become
# Running/Ready). Binaries come from scripts/kube-build.sh (built from tools/kubeenv), or from
# $KUBEBUILDER_ASSETS (envtest's convention: a directory holding kube-apiserver and etcd, and
# possibly the others) where it has them.
#
#   scripts/kube-env.sh up [DIR]       start (fresh state), wait until ready, write DIR/kubeconfig
#   scripts/kube-env.sh down [DIR]     stop the processes this script started in DIR
#   scripts/kube-env.sh status [DIR]   show the processes and whether the API server is ready
#
# DIR defaults to ${CARGO_TARGET_DIR:-target}/kubeenv/run. After `up`, DIR holds:
#   kubeconfig     admin (system:masters) by client certificate; context "token" uses a bearer token
#   env            KUBECONFIG, KUBE_APISERVER_URL, KUBE_ADMIN_TOKEN, KUBE_CA_FILE (shell syntax)
#   admin.token    the admin bearer token;  pki/  certificates and keys;  logs/  one log per process
#   pids/          one pid file per process (down stops only these)
# Environment: KUBE_ENV_TIMEOUT (seconds to wait for readiness, default 90), KUBE_ENV_NODES
# (fake nodes, default 3), KUBEBUILDER_ASSETS, KUBEENV_BIN (see kube-build.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMD=${1:-}
TD=${CARGO_TARGET_DIR:-target}
case $TD in /*) ;; *) TD=$ROOT/$TD ;; esac
DIR=${2:-$TD/kubeenv/run}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
TIMEOUT=${KUBE_ENV_TIMEOUT:-90}
NODES=${KUBE_ENV_NODES:-3}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Binary paths, set by resolve_bins (BIN_ + component name with _ for -).
BIN_etcd="" BIN_kube_apiserver="" BIN_kube_controller_manager="" BIN_kube_scheduler="" BIN_kwok=""

log() { echo "kube-env: $*" >&2; }
die() { log "$*"; exit 1; }

# pid of component $1 if it is alive and is the process we started (its command line names DIR).
alive_pid() {
  local f=$DIR/pids/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
  echo "$pid"
}

# Whether pid $1 still runs (a zombie waiting for its reaper counts as gone).
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_all() {
  local c pid i pids=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do     # reverse start order
    c=${COMPONENTS[$i]}
    if pid=$(alive_pid "$c"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      # Let clients go before etcd so that the API server shuts down cleanly.
      if [ "$c" = kube-apiserver ]; then
        for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
      fi
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -f "$DIR"/pids/*.pid
}

status() {
  local c pid up=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(alive_pid "$c"); then echo "$c: running (pid $pid)"; up=$((up + 1)); else echo "$c: stopped"; fi
  done
  if [ -f "$DIR/env" ] && [ "$up" -gt 0 ]; then
    # shellcheck disable=SC1091
    . "$DIR/env"
    echo "kube-apiserver $KUBE_APISERVER_URL /readyz: $(api GET /readyz 2>/dev/null || echo unreachable)"
    echo "ready nodes: $(ready_nodes 2>/dev/null || echo '?')"
  fi
  [ "$up" -eq ${#COMPONENTS[@]} ]
}

api() { # METHOD PATH [JSON-BODY]
  local args=(-sS --fail-with-body --max-time 10 --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $KUBE_ADMIN_TOKEN")
  if [ -n "${3:-}" ]; then args+=(-H 'Content-Type: application/json' --data-binary "$3"); fi
  curl "${args[@]}" -X "$1" "$KUBE_APISERVER_URL$2"
}

ready_nodes() {
  api GET /api/v1/nodes?labelSelector=type%3Dkwok | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(1 for n in items for c in n.get("status", {}).get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"))'
}

free_ports() { # N: N free loopback TCP ports
  python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Resolve the binaries: $KUBEBUILDER_ASSETS first, then the kube-build.sh cache (built if needed).
resolve_bins() {
  local c need_build=0
  for c in "${COMPONENTS[@]}"; do
    if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$c" ]; then continue; fi
    need_build=1
  done
  local built=""
  if [ "$need_build" = 1 ]; then built=$("$ROOT/scripts/kube-build.sh" | tail -1); fi
  for c in "${COMPONENTS[@]}"; do
    local var=BIN_${c//-/_}
    if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$c" ]; then
      printf -v "$var" %s "$KUBEBUILDER_ASSETS/$c"
    else
      printf -v "$var" %s "$built/$c"
    fi
  done
}

# ECDSA P-256 keys (PKCS#8) for the CAs and certificates: fast to make; RSA for the
# service-account signing key (RS256, as kubeadm makes it).
gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

gen_ca() { # NAME CN
  gen_key "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}

# Certificate signed by a CA: NAME SUBJECT EXTENSIONS [CA-NAME]
gen_cert() {
  local ca=${4:-ca}
  gen_key "$PKI/$1.key"
  openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr" "$PKI/$1.ext" "$PKI/$ca.srl"
}

make_pki() {
  PKI=$DIR/pki
  mkdir -p "$PKI"
  gen_ca ca tidemark-kubeenv-ca
  gen_ca front-proxy-ca tidemark-kubeenv-front-proxy-ca
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  gen_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert admin "/O=system:masters/CN=kubernetes-admin" "$client"
  gen_cert controller-manager "/CN=system:kube-controller-manager" "$client"
  gen_cert scheduler "/CN=system:kube-scheduler" "$client"
  gen_cert front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# Kubeconfig with file references (for the components): FILE CERT-NAME
component_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: $KUBE_APISERVER_URL
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: kubeenv
  context: {cluster: kubeenv, user: $2}
current-context: kubeenv
EOF
}

b64() { base64 -w0 <"$1"; }

start() { # NAME BINARY ARGS...: start detached, pid into DIR/pids, log into DIR/logs
  local name=$1 bin=$2
  shift 2
  setsid "$bin" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name.pid"
}

wait_for() { # DESCRIPTION COMMAND...: poll until COMMAND succeeds or the deadline passes
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [ -f "$DIR/pids/$c.pid" ] && ! alive_pid "$c" >/dev/null; then
        tail -n 30 "$DIR/logs/$c.log" >&2 || true
        stop_all
        die "$c exited while waiting for $what (log: $DIR/logs/$c.log)"
      fi
    done
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
      stop_all
      die "timed out after ${TIMEOUT}s waiting for $what (logs: $DIR/logs)"
    fi
    sleep 0.2
  done
}

healthz() { curl -sfk --max-time 2 "https://127.0.0.1:$1/healthz"; }
nodes_ready() { [ "$(ready_nodes)" -ge "$NODES" ]; }
default_sa() { api GET /api/v1/namespaces/default/serviceaccounts/default; }

kwok_stages() { # the Stage objects kube-build.sh writes next to the kwok binary
  local s
  for s in "$(dirname "$BIN_kwok")/kwok-stages.yaml" "${KUBEENV_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark/kubeenv/bin}/kwok-stages.yaml"; do
    [ -f "$s" ] && { echo "$s"; return; }
  done
  die "kwok-stages.yaml not found next to $BIN_kwok (scripts/kube-build.sh writes it)"
}

up() {
  local t0 c
  t0=$(date +%s.%N)
  if status >/dev/null 2>&1; then
    log "already running in $DIR"
    echo "export KUBECONFIG=$DIR/kubeconfig"
    return 0
  fi
  stop_all                                   # leftovers of a half-dead earlier run
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  resolve_bins
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/logs" "$DIR/pids" "$DIR"/*.kubeconfig "$DIR/kubeconfig" "$DIR/env"
  mkdir -p "$DIR/logs" "$DIR/pids"
  DEADLINE=$(($(date +%s) + TIMEOUT))

  local etcd_port peer_port api_port kcm_port sched_port kwok_port
  read -r etcd_port peer_port api_port kcm_port sched_port kwok_port <<<"$(free_ports 6)"
  KUBE_APISERVER_URL=https://127.0.0.1:$api_port
  KUBE_ADMIN_TOKEN=$(openssl rand -hex 24)
  make_pki
  KUBE_CA_FILE=$PKI/ca.crt
  echo "$KUBE_ADMIN_TOKEN" >"$DIR/admin.token"
  echo "$KUBE_ADMIN_TOKEN,kubernetes-admin,kubernetes-admin,system:masters" >"$PKI/tokens.csv"
  chmod 600 "$DIR/admin.token" "$PKI/tokens.csv" "$PKI"/*.key

  local etcd_url=http://127.0.0.1:$etcd_port peer_url=http://127.0.0.1:$peer_port
  start etcd "$BIN_etcd" --name=kubeenv --data-dir="$DIR/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="kubeenv=$peer_url" --initial-cluster-state=new \
    --unsafe-no-fsync=true --auto-compaction-retention=1 --log-level=warn
  wait_for "etcd" curl -sf --max-time 1 "$etcd_url/health"

  # Flags as kubeadm sets them (default admission plugins + NodeRestriction, Node+RBAC).
  start kube-apiserver "$BIN_kube_apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="$etcd_url" --allow-privileged=true \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/12 --endpoint-reconciler-type=none --cert-dir="$PKI" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"

  component_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
  component_kubeconfig "$DIR/scheduler.kubeconfig" scheduler
  component_kubeconfig "$DIR/admin-files.kubeconfig" admin
  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: $KUBE_APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: kubernetes-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
- name: kubernetes-admin-token
  user:
    token: $KUBE_ADMIN_TOKEN
contexts:
- name: kubeenv
  context: {cluster: kubeenv, user: kubernetes-admin}
- name: token
  context: {cluster: kubeenv, user: kubernetes-admin-token}
current-context: kubeenv
EOF
  chmod 600 "$DIR"/*kubeconfig
  cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBE_APISERVER_URL=$KUBE_APISERVER_URL
KUBE_ADMIN_TOKEN=$KUBE_ADMIN_TOKEN
KUBE_CA_FILE=$KUBE_CA_FILE
EOF

  # The controller manager and the scheduler exit if the RBAC bootstrap roles are not there yet
  # (delegated authentication reads a ConfigMap in kube-system): start them once /readyz passes.
  wait_for "kube-apiserver /readyz" api GET /readyz
  start kube-controller-manager "$BIN_kube_controller_manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false \
    --controllers='*' --use-service-account-credentials=true \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --client-ca-file="$PKI/ca.crt" --cluster-name=kubeenv
  start kube-scheduler "$BIN_kube_scheduler" \
    --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false
  # Pod logs: kwok's kubelet endpoint serves every container's log from one file (CRI log
  # format, 50 lines; `follow` waits for more) — a ClusterLogs object matching every pod.
  python3 - "$DIR/pod.log" <<'PY'
import sys, datetime
t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
with open(sys.argv[1], "w") as f:
    for n in range(1, 51):
        at = (t + datetime.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
        f.write(f"{at} stdout F kwok line {n}: GET /healthz 200\n")
PY
  cat >"$DIR/kwok-logs.yaml" <<YAML
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: every-pod}
spec:
  selector: {}
  logs:
  - logsFile: $DIR/pod.log
    follow: true
YAML
  start kwok "$BIN_kwok" --kubeconfig="$DIR/admin-files.kubeconfig" --config="$(kwok_stages)" \
    --config="$DIR/kwok-logs.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --node-port="$kwok_port" --server-address="127.0.0.1:$kwok_port" \
    --cidr=10.244.0.0/16 --node-lease-duration-seconds=40

  local i
  for ((i = 0; i < NODES; i++)); do
    api POST /api/v1/nodes "$(node_json "kwok-node-$i")" >/dev/null ||
      { stop_all; die "could not create node kwok-node-$i"; }
  done
  wait_for "$NODES Ready nodes" nodes_ready
  wait_for "kube-controller-manager /healthz" healthz "$kcm_port"
  wait_for "kube-scheduler /healthz" healthz "$sched_port"
  wait_for "the default ServiceAccount" default_sa
  log "ready in $(python3 -c "import time; print(round(time.time() - $t0, 1))")s: $(api GET /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])'), $NODES kwok nodes, $KUBE_APISERVER_URL"
  echo "export KUBECONFIG=$DIR/kubeconfig"
}

node_json() {
  cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$1",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"type": "kwok", "kubernetes.io/hostname": "$1", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/agent": ""}},
 "status": {
   "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"},
   "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"},
   "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                "kubeletVersion": "fake", "kubeProxyVersion": "fake"}}}
EOF
}

case $CMD in
  up) up ;;
  down)
    stop_all
    log "stopped ($DIR)"
    ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status [DIR]" >&2
    exit 2
    ;;
esac
