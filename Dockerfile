# Build: docker build -t freeagent .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin freeagent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/freeagent /usr/local/bin/freeagent
ENV HOST=0.0.0.0 PORT=3000 FREEAGENT_DATA_DIR=/var/lib/freeagent
VOLUME /var/lib/freeagent
EXPOSE 3000
ENTRYPOINT ["freeagent"]
CMD ["serve"]
