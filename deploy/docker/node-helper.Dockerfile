# syntax=docker/dockerfile:1.7
# snapmend-node-helper (CLI and DaemonSet agent). Build from the repository root:
#   docker build -f deploy/docker/node-helper.Dockerfile -t REGISTRY/snapmend-node-helper:TAG .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY node-helper node-helper
COPY operator operator
COPY tests tests
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p snapmend-node-helper --bin snapmend-node-helper \
 && install -D -m 0755 target/release/snapmend-node-helper /out/snapmend-node-helper

# Runs as root: the DaemonSet is privileged and rewrites files of any owner inside
# containerd's snapshots. The binary reads the store directly; it needs no host tools.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/snapmend-node-helper /usr/local/bin/snapmend-node-helper
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/snapmend-node-helper"]
