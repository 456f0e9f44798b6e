# syntax=docker/dockerfile:1
# audio-server: the multi-tenant device audio service (mTLS gRPC).
# Build:  docker build -t device-server:local .
# Run:    see docs/operate/kubernetes.md, "Run in Docker" (certificates are mounted, never baked in).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: wheels for the project and its dependencies (no compilers reach the final stage)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, so this layer is cached until pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p src/comms src/auth src/server src/device \
    && touch src/comms/__init__.py src/auth/__init__.py src/server/__init__.py src/device/__init__.py \
    && pip wheel --wheel-dir /wheels .
# Then the source (certs/, keys and .venv are excluded by .dockerignore).
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: slim Python, libopus0, the wheels, a non-root user
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 audio-server \
    && useradd --system --uid 10001 --gid audio-server --home-dir /var/lib/audio-server --create-home audio-server
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels pi-audio-service && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    AUDIO_SERVER_BIND=0.0.0.0:50051 \
    AUDIO_SERVER_HEALTH_BIND=0.0.0.0:8081 \
    AUDIO_SERVER_METRICS_BIND=0.0.0.0:9464 \
    AUDIO_SERVER_PKI_DIR=/etc/audio-server/pki \
    AUDIO_SERVER_STATE_PATH=/var/lib/audio-server/state/devices.sqlite3 \
    AUDIO_SERVER_CACHE_DIR=/var/lib/audio-server/cache \
    AUDIO_SERVER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/audio-server
EXPOSE 50051 8081 9464
ENTRYPOINT ["audio-server"]
CMD []
