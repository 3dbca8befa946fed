# syntax=docker/dockerfile:1
# The backlog-scaler image: `docker build -t backlog-scaler .` (k8s/README.md).
#
# Build stage: the same release build as the README's `cargo build --release --locked`, on
# Debian 12 so that the binary's glibc matches the runtime image's.
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads (.dockerignore keeps target/, .test-deps/ and .git/ out).
# benches/ is there because Cargo.toml declares its targets.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
# The cache mounts keep the crates.io downloads and compiled dependencies between builds;
# the binary is copied out of the cached target/ so that the next stage can find it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/backlog-scaler /backlog-scaler

# Runtime: glibc, libgcc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /backlog-scaler /backlog-scaler
# distroless's user `nonroot`, by number: the kubelet can check runAsNonRoot only against a
# numeric user, and k8s/base/deployment.yaml runs as 65532 too.
USER 65532:65532
# 9090: gRPC (ExternalScaler, health, reflection); 8080: server.http_listen (Prometheus
# /metrics, /healthz, /readyz).
EXPOSE 9090 8080
ENTRYPOINT ["/backlog-scaler", "serve", "--config", "/etc/backlog-scaler/config.toml"]
