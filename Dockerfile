# One container: the service with its embedded SQLite database and registry.
#   docker build -t odm-devops .
#   export ODM_DEVOPS__AUTH__API_TOKENS=$(openssl rand -hex 32)
#   docker run -p 8002:8002 -v odm-data:/app/data -e ODM_DEVOPS__AUTH__API_TOKENS odm-devops
FROM rust:1-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/odm-devops

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq libpq5 ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app odm && mkdir -p /app/data && chown odm /app/data
WORKDIR /app
COPY --from=build /src/target/release/odm-devops /usr/local/bin/odm-devops
USER odm
# Secrets (client secret, callback secret, database password) come from the environment at run
# time, never from the image: ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET=…
# Also set ODM_DEVOPS__SERVER__PUBLIC_URL to the address pipelines reach this container at: it
# is the base of every callbackRef.
# Bound to every interface, the service does not start without an API token
# (-e ODM_DEVOPS__AUTH__API_TOKENS, from the environment) unless ODM_DEVOPS__AUTH__ANONYMOUS=true
# says it may be open on purpose. The health check below needs no token.
ENV ODM_DEVOPS__SERVER__BIND=0.0.0.0:8002
EXPOSE 8002
VOLUME /app/data
# bash, not sh: /dev/tcp is a bash feature (dash, Debian's sh, fails every check). Ready means
# the database answers, not merely that the port is open.
HEALTHCHECK CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8002 && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["odm-devops"]
CMD ["serve"]
