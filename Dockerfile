# syntax=docker/dockerfile:1
#
# One image for all seven Kiln services. Pick the service with the command, e.g.
#   docker run --rm kiln:dev api --dump-config
# docker-compose.yaml runs every service from this image with `command: ["<binary>"]`.
#
# Stages:
#   chef     Rust toolchain (pinned by rust-toolchain.toml) + cargo-chef
#   planner  reduces the workspace to a recipe (manifests + Cargo.lock)
#   builder  builds the dependencies from the recipe (cached while no manifest changes),
#            then the workspace itself
#   web-build  the web app (frontend/, Vite) built to static files
#   web        nginx (unprivileged, uid 101) serving them over TLS and proxying /api to api
#   runtime  debian slim with the seven binaries, kiln-runner, config.toml and a non-root user
#            (the last stage, so the default target; compose names each target explicitly)

# Keep RUST_VERSION equal to the channel in rust-toolchain.toml: the toolchain is then already in
# the base image and rustup only adds the components the file names.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# --------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# The full (non-slim) rust image already has what rdkafka-sys needs to build librdkafka from
# source with its own ./configure + make: gcc, make, pkg-config and zlib1g-dev. No cmake (the
# cmake-build feature is off), no OpenSSL, SASL, curl or zstd (those features are off too).
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src
COPY rust-toolchain.toml ./
# Installs the pinned toolchain and components if the base image lacks them (a no-op otherwise).
RUN rustup toolchain install && rustc --version

# --------------------------------------------------------------------------------------------
FROM chef AS planner
# Only the Rust workspace: edits to frontend/ or docker/ must not invalidate the Rust layers.
COPY Cargo.toml Cargo.lock rust-toolchain.toml config.toml ./
COPY shared shared
COPY services services
COPY tests tests
COPY tools tools
RUN cargo chef prepare --recipe-path recipe.json

# --------------------------------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock of some member changes.
RUN cargo chef cook --release --workspace --locked --recipe-path recipe.json
COPY Cargo.toml Cargo.lock rust-toolchain.toml config.toml ./
COPY shared shared
COPY services services
COPY tests tests
COPY tools tools
RUN cargo build --release --locked --workspace --bins
# Collect exactly the seven binaries; a missing one fails the build.
RUN set -eux; \
    mkdir -p /out; \
    for bin in api saga-orchestrator k8s-worker pod-monitor result-processor event-replay dlq-processor kiln-runner; do \
        install -m 0755 "target/release/$bin" "/out/$bin"; \
    done

# --------------------------------------------------------------------------------------------
FROM node:22-bookworm-slim AS web-build
WORKDIR /web
# Dependencies first: this layer is reused until package.json or the lock file changes.
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# --------------------------------------------------------------------------------------------
FROM nginxinc/nginx-unprivileged:1.29-alpine AS web
USER root
# openssl: docker/web/40-kiln-tls.sh makes a self-signed certificate on first start when the
# certificate volume has none (replace it with a real one by mounting cert.pem and key.pem).
RUN apk add --no-cache openssl && install -d -o 101 -g 101 /etc/nginx/tls
COPY --chmod=0755 docker/web/40-kiln-tls.sh /docker-entrypoint.d/40-kiln-tls.sh
# A template: the entrypoint substitutes ${KILN_WEB_HTTPS_PORT} (nginx variables stay as they are).
COPY docker/web/nginx.conf /etc/nginx/templates/default.conf.template
COPY --from=web-build /web/dist /usr/share/nginx/html
USER 101
EXPOSE 8443

# --------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to managed MongoDB/Redis/OTLP endpoints.
# bubblewrap:      the local runtime's sandbox (runtime.kind = "local").
# curl:            container health checks against /health/ready.
# tini:            PID 1 that forwards SIGTERM and reaps sandbox children.
# zlib1g:          librdkafka links it dynamically (already in the base; listed to be explicit).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates bubblewrap curl tini zlib1g; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 kiln; \
    useradd --system --uid 10001 --gid kiln --home-dir /var/lib/kiln --shell /usr/sbin/nologin kiln; \
    install -d -o kiln -g kiln -m 0750 /var/lib/kiln /var/lib/kiln/executions

COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0644 config.toml /etc/kiln/config.toml

LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kiln services: api, saga-orchestrator, k8s-worker, pod-monitor, result-processor, event-replay, dlq-processor" \
      org.opencontainers.image.licenses="Apache-2.0"

# Every binary reads this file; KILN__SECTION__KEY environment variables override any key.
# The file's addresses (127.0.0.1) and development secret suit no container: set at least
# KILN__KAFKA__BOOTSTRAP_SERVERS, KILN__MONGO__URI, KILN__REDIS__URL,
# KILN__SERVICES__<NAME>__HTTP_ADDR=0.0.0.0:<port>, KILN__API__JWT_SECRET and
# KILN__TELEMETRY__ENVIRONMENT (see docker-compose.yaml and docs/configuration.md).
ENV KILN_CONFIG=/etc/kiln/config.toml
# runtime.work_dir is relative to the working directory.
WORKDIR /var/lib/kiln
USER 10001:10001

# api 8080; saga-orchestrator 9101, k8s-worker 9102, pod-monitor 9103, result-processor 9104,
# event-replay 9105, dlq-processor 9106 (health and metrics).
EXPOSE 8080 9101 9102 9103 9104 9105 9106

ENTRYPOINT ["/usr/bin/tini", "--"]
# No default service: name one.
CMD ["/bin/sh", "-c", "echo 'kiln: name a service: api | saga-orchestrator | k8s-worker | pod-monitor | result-processor | event-replay | dlq-processor (each takes --config PATH and --dump-config)' >&2; exit 64"]
