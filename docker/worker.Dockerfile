# bitbylaw-worker image. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t bitbylaw-worker .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The workspace release profile is tuned for the wasm filters (panic = "abort"); the worker
# catches handler panics and turns them into retries, so it needs unwinding.
ENV CARGO_PROFILE_RELEASE_PANIC=unwind
RUN cargo build --locked --release -p bitbylaw-worker \
 && cp target/release/bitbylaw-worker /usr/local/bin/bitbylaw-worker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin bitbylaw
COPY --from=build /usr/local/bin/bitbylaw-worker /usr/local/bin/bitbylaw-worker
COPY worker/config.example.toml /etc/bitbylaw/worker.example.toml
USER bitbylaw
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/bitbylaw-worker"]
CMD ["serve"]
