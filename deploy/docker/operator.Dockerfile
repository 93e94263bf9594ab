# syntax=docker/dockerfile:1.7
# snapmend-operator. Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t REGISTRY/snapmend-operator:TAG .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace is needed to resolve it; Cargo.lock pins every dependency (--locked).
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY node-helper node-helper
COPY operator operator
COPY tests tests
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p snapmend-operator --bin snapmend-operator \
 && install -D -m 0755 target/release/snapmend-operator /out/snapmend-operator

# glibc + libgcc only, no shell; uid 65532 as the Deployment's securityContext expects.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/snapmend-operator /usr/local/bin/snapmend-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/snapmend-operator"]
