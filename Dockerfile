# syntax=docker/dockerfile:1
#
# Tidemark's container image: the `tidemark` binary and the compiled site (SSR + WASM), running as
# a non-root user (65532) on Debian bookworm. deploy/kubernetes/ runs it in a cluster.
#
#   docker build -t registry.example.com/tidemark:0.1.0 .
#   docker push registry.example.com/tidemark:0.1.0
#
# The development machines have no Docker: this file has not been built there. It repeats what
# scripts/setup.sh installs for `cargo leptos build --release` (the wasm32 target, cargo-leptos
# 0.3.10, the wasm-bindgen CLI matching Cargo.lock, binaryen's wasm-opt from npm).

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# --- wasm-opt: binaryen from npm (Debian's binaryen 108 breaks the WASM; end2end/package-lock.json
#     pins 132.0.0). It is a Node program; the builder gets this stage's node binary with it.
FROM node:${NODE_VERSION}-bookworm-slim AS binaryen
ARG BINARYEN_VERSION=132.0.0
RUN npm install --global --no-audit --no-fund "binaryen@${BINARYEN_VERSION}" \
 && wasm-opt --version

# --- kubectl: renders Kustomize applications at run time (`git.kustomize_command = "kubectl"`,
#     `kubectl kustomize`). Debian bookworm has no kubectl package; the release binary is checked
#     against its published SHA-256.
FROM debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION=v1.36.3
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    base="https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${arch}"; \
    curl -fsSLo /usr/local/bin/kubectl "${base}/kubectl"; \
    echo "$(curl -fsSL "${base}/kubectl.sha256")  /usr/local/bin/kubectl" | sha256sum -c -; \
    chmod 0755 /usr/local/bin/kubectl; \
    /usr/local/bin/kubectl version --client

# --- helm: renders Helm chart applications (`helm template`, `helm dependency build`, `helm
#     pull`). Helm's official release binary, checked against its published SHA-256.
FROM debian:bookworm-slim AS helm
ARG HELM_VERSION=v4.1.4
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    tarball="helm-${HELM_VERSION}-linux-${arch}.tar.gz"; \
    curl -fsSLo "/tmp/${tarball}" "https://get.helm.sh/${tarball}"; \
    echo "$(curl -fsSL "https://get.helm.sh/${tarball}.sha256sum" | awk '{print $1}')  /tmp/${tarball}" | sha256sum -c -; \
    tar -xzf "/tmp/${tarball}" -C /tmp; \
    install -m 0755 "/tmp/linux-${arch}/helm" /usr/local/bin/helm; \
    /usr/local/bin/helm version --short

# --- builder: the release binary and target/site.
FROM rust:${RUST_VERSION}-bookworm AS builder
ARG CARGO_LEPTOS_VERSION=0.3.10
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    PATH=/opt/binaryen/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=binaryen /usr/local/bin/node /usr/local/bin/node
COPY --from=binaryen /usr/local/lib/node_modules/binaryen /opt/binaryen/lib/binaryen
RUN mkdir -p /opt/binaryen/bin \
 && ln -s /opt/binaryen/lib/binaryen/bin/wasm-opt /opt/binaryen/bin/wasm-opt \
 && wasm-opt --version
RUN rustup target add wasm32-unknown-unknown
# cargo-leptos 0.3.11+ needs a newer rustc; no_downloads makes it use the tools on PATH.
RUN cargo install cargo-leptos --version "${CARGO_LEPTOS_VERSION}" --locked --features no_downloads
WORKDIR /src
# The wasm-bindgen CLI must equal the wasm-bindgen crate in Cargo.lock exactly (not --locked,
# as in scripts/setup.sh).
COPY Cargo.lock ./
RUN want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock) \
 && test -n "$want" \
 && cargo install wasm-bindgen-cli --version "$want" \
 && wasm-bindgen --version
COPY . .
# The registry and target/ are cache mounts (kept between builds on one builder), so the results
# are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo leptos build --release --precompress \
 && mkdir -p /out \
 && cp target/release/tidemark /out/tidemark \
 && cp -r target/site /out/site \
 && cp target/release/hash.txt /out/site/hash.txt \
 && ldd /out/tidemark

# --- runtime
FROM debian:bookworm-slim
# ca-certificates: HTTPS to Git hosts, OIDC providers, webhooks, SMTP; libssl3: the binary links
# OpenSSL (kube, git2, e-mail); bubblewrap: the Kustomize sandbox (`git.kustomize_sandbox =
# "bwrap"`, where the container may create user namespaces; see deploy/kubernetes/configmap.yaml);
# coreutils' `timeout` (in the base image) bounds each render. No `git` binary: Tidemark reads
# repositories with libgit2, built into the binary. helm renders charts (in the same sandbox).
# gpgv and openssh-client (ssh-keygen -Y) check commit signatures.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 bubblewrap gpgv openssh-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=kubectl /usr/local/bin/kubectl /usr/local/bin/kubectl
COPY --from=helm /usr/local/bin/helm /usr/local/bin/helm
COPY --from=builder /out/tidemark /usr/local/bin/tidemark
COPY --from=builder /out/site /usr/share/tidemark/site
# A directory the non-root user owns for state (git.cache_dir, a SQLite file when run without
# PostgreSQL); the Kubernetes manifests mount emptyDirs instead and keep the root file system
# read-only.
RUN install -d -o 65532 -g 65532 /var/lib/tidemark /var/lib/tidemark/git \
 && /usr/local/bin/tidemark --version
# Where the site is in this image (an environment variable wins over the file, so tidemark.toml
# need not know). The listen address comes from the configuration: `listen = "0.0.0.0:3000"`.
ENV TIDEMARK__SERVER__SITE_ROOT=/usr/share/tidemark/site \
    RUST_LOG=info,sqlx=warn
WORKDIR /var/lib/tidemark
USER 65532:65532
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/tidemark"]
CMD ["--config", "/etc/tidemark/tidemark.toml", "serve"]
