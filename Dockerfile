# syntax=docker/dockerfile:1.7
# The imerg-ingest image: one image for every role (listener, worker, committer, api; chosen at run
# time with IMERG_ROLES). Multi-stage, on Debian 13 (trixie): the build stage has the HDF5 headers,
# pkg-config and protoc (the same apt packages as scripts/setup.sh) and builds the binary from
# Cargo.lock (--locked); the runtime stage is debian slim with only the HDF5 1.14 runtime library and
# CA certificates, running as an unprivileged user. (The test suite runs on this machine's HDF5
# 1.10; hdf5-metno 0.12 supports 1.10 to 1.14.6, the image links 1.14.) No secrets are baked in: tokens arrive as files
# mounted at run time (IMERG_EARTHDATA_TOKEN_FILE, IMERG_OPERATOR_TOKEN_FILE).
# tests/deploy/check_deploy.py checks this file against the repository (toolchain, apt packages,
# shared libraries, user, secrets, hadolint).
#
#   docker build -t imerg-ingest:$(git rev-parse --short HEAD) \
#     --build-arg VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1) \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     --build-arg SOURCE=$(git remote get-url origin) .
#   docker run --rm -p 9464:9464 imerg-ingest:TAG serve --demo
#
# Multi-arch (amd64 and arm64, e.g. for AWS Graviton): every base image and apt package used here
# exists for both (rust and debian official images; libhdf5-dev, libhdf5-310, pkg-config and
# protobuf-compiler are built for arm64 by Debian), so one buildx command makes a manifest list:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/imerg-ingest:TAG --push .
# Under QEMU emulation the arm64 release build takes hours: give buildx a native arm64 node instead
# (docker buildx create --append --name imerg ssh://graviton-host, or build on an arm64 CI runner
# and join the two images with docker buildx imagetools create). Each platform keeps its own
# target/ cache below.

# Must equal rust-toolchain.toml's channel (checked by the deploy test).
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG TARGETPLATFORM
# The git commit, exported by the binary as imerg_build_info{revision}.
ARG REVISION=unknown
# Versions are not pinned: the release's security updates replace them on the mirrors, and the
# runtime stage must get the same HDF5 build the binary was linked against.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libhdf5-dev pkg-config protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (every member's manifest is needed to resolve it); .dockerignore keeps the
# build context to sources, Cargo.toml, Cargo.lock, rust-toolchain.toml and proto/.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=imerg-target-${TARGETPLATFORM},target=/src/target \
    IMERG_GIT_REVISION="${REVISION}" cargo build --release --locked -p imerg-ingest \
 && install -D -m 0755 target/release/imerg-ingest /out/imerg-ingest

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# OCI annotations: pass these ARGs at build time (see above); the defaults mark a local build.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="imerg-ingest" \
      org.opencontainers.image.description="Writes Icechunk (Zarr v3) datasets of NASA GPM IMERG precipitation: listener, worker, committer and API roles in one binary" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# libhdf5-310 is trixie's HDF5 1.14 runtime (libhdf5_serial.so.310, the library libhdf5-dev links
# against); its dependencies bring libcurl, libsz/libaec and zlib. ca-certificates: the S3, SQS and
# Earthdata clients verify TLS against the system roots.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libhdf5-310 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 imerg \
 && useradd --system --uid 10001 --gid imerg --home-dir /var/lib/imerg --create-home \
      --shell /usr/sbin/nologin imerg
COPY --from=build /out/imerg-ingest /usr/local/bin/imerg-ingest
USER 10001:10001
WORKDIR /var/lib/imerg
# In a container the endpoints must listen beyond loopback (the binary defaults to 127.0.0.1).
ENV IMERG_GRPC_ADDR=0.0.0.0:50051 \
    IMERG_HTTP_ADDR=0.0.0.0:9464 \
    IMERG_DATA_DIR=/var/lib/imerg
# gRPC (IngestService / WorkerService / CommitService, health, reflection) and HTTP (/metrics,
# /healthz, /readyz).
EXPOSE 50051 9464
# For plain `docker run`; Kubernetes ignores this and uses the Deployments' probes on the same
# endpoint (liveness /healthz, readiness /readyz). bash's /dev/tcp: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/imerg-ingest"]
CMD ["serve"]
