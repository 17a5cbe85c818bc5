# Multi-stage build of the `strata` binary into a small non-root image.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin strata && strip target/release/strata

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data strata \
    && mkdir -p /data && chown strata /data
COPY --from=build /src/target/release/strata /usr/local/bin/strata
USER strata
VOLUME ["/data"]
EXPOSE 9092 9093 9644
ENTRYPOINT ["strata"]
CMD ["dev", "--data-dir", "/data", "--listen", "0.0.0.0:9092", "--http", "0.0.0.0:9644"]
