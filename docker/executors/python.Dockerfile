# syntax=docker/dockerfile:1
#
# Kiln executor image for python (runtime.kind = "kubernetes"): the language's toolchain plus
# kiln-runner as the entrypoint. k8s-worker starts it as
#   kiln-runner --container /etc/kiln /kiln
# with the script and runner spec mounted read-only at /etc/kiln (a ConfigMap), a size-limited
# emptyDir at /kiln and /tmp, a read-only root file system, uid/gid 10001 and no capabilities.
#
# kiln-runner comes from the platform image (build it first: docker build -t kiln:dev .):
#   docker build -f docker/executors/python.Dockerfile -t kiln/executor-python:3.11 .
# The interpreter path must match runtime.languages[].command in config.toml.
ARG KILN_IMAGE=kiln:dev
FROM ${KILN_IMAGE} AS kiln

FROM python:3.11-slim-bookworm
# config.toml runs /usr/bin/python3; the official image installs it in /usr/local/bin.
RUN ln -s /usr/local/bin/python3 /usr/bin/python3 && /usr/bin/python3 --version
RUN set -eux; \
    groupadd --gid 10001 kiln; \
    useradd --uid 10001 --gid kiln --home-dir /tmp --no-create-home --shell /usr/sbin/nologin kiln
COPY --from=kiln --chmod=0755 /usr/local/bin/kiln-runner /usr/local/bin/kiln-runner
LABEL org.opencontainers.image.title="kiln-executor-python" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /kiln
ENTRYPOINT ["/usr/local/bin/kiln-runner", "--container", "/etc/kiln", "/kiln"]
