# syntax=docker/dockerfile:1
# Build exactly as `make build` does (static, CGO_ENABLED=0), then run as
# non-root on a distroless base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0
RUN make build VERSION=${VERSION}

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/idle-worker /usr/local/bin/idle-worker
USER nonroot:nonroot
# In a container, point the worker at your NATS system:
#   IDLE_NATS_URL=nats://nats:4222
# Every IDLE_* variable in the README applies. The image sets JSON logs and
# serves metrics on all interfaces (the binary defaults to text and loopback):
ENV IDLE_SUBJECT_PREFIX=idle \
    IDLE_DEFAULT_TIMEOUT=30s \
    IDLE_MAX_TIMEOUT=24h \
    IDLE_LOG_LEVEL=info \
    IDLE_LOG_FORMAT=json \
    IDLE_HTTP_ADDR=0.0.0.0:9464
# Without IDLE_NATS_URL the worker embeds a nats-server; to reach it from
# outside the container set IDLE_EMBEDDED_LISTEN=0.0.0.0:4222 and
# IDLE_EMBEDDED_ALLOW_REMOTE=true (it has no authentication).
# /metrics, /healthz, /readyz
EXPOSE 9464
EXPOSE 4222
ENTRYPOINT ["/usr/local/bin/idle-worker"]
