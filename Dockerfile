# Multi-stage build of every binary of the project: bridge, bridge-replay,
# webhook-demo, schemas (registry and catalog tools) and consumers.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bridge -p schemas -p consumers --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bridge /src/target/release/bridge-replay /src/target/release/webhook-demo /src/target/release/schemas /src/target/release/consumers /usr/local/bin/
COPY schemas/catalog /app/schemas/catalog
COPY schemas/samples /app/schemas/samples
COPY bridge/bridge.example.toml /app/bridge.toml
COPY consumers/consumers.example.toml /app/consumers.toml
WORKDIR /app
USER 10001
CMD ["bridge", "--config", "/app/bridge.toml"]
