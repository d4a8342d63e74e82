# syntax=docker/dockerfile:1
# feast-rs: one image for the four services (registry, online, offline, materializer) and
# the CLI. Build:   docker build -t feast-rs:dev .
# Run:     docker run --rm feast-rs:dev --help
#
# Stage 1 builds the release binary with the toolchain the workspace declares
# (Cargo.toml: rust-version = "1.94"). The BuildKit cache mounts keep the crates.io
# downloads and the target directory between builds; they never end up in a layer.
FROM rust:1.94-trixie AS builder
WORKDIR /src
# .cargo/config.toml points the target dir at /var/tmp (shared by local checkouts);
# inside the image it is a cache mount of its own.
ENV CARGO_TARGET_DIR=/src/target \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p feast-rs --locked \
 && install -m 0755 target/release/feast-rs /usr/local/bin/feast-rs

# Stage 2: the runtime. Debian of the same release as the builder, so the binary finds the
# glibc it was linked against; ca-certificates for TLS to identity providers, Postgres and
# Redis (feast-rs uses the system roots besides any CA file the configuration names).
FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 feast \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /feast --shell /usr/sbin/nologin feast \
 && mkdir -p /feast \
 && chown 10001:10001 /feast
COPY --from=builder /usr/local/bin/feast-rs /usr/local/bin/feast-rs
# /feast: the working directory and where feature repositories are mounted. An empty named
# volume mounted here starts out owned by the feast user.
WORKDIR /feast
USER 10001:10001
# 6566 online (HTTP + gRPC), 6570 registry (gRPC), 6571 materializer (gRPC),
# 8815 offline (Arrow Flight). The servers other than the registry bind 127.0.0.1 unless
# started with --host 0.0.0.0, which every manifest in deploy/ passes.
EXPOSE 6566 6570 6571 8815
ENTRYPOINT ["feast-rs"]
CMD ["--help"]
