# A slim image that runs the sidecar as a non-root user: `docker run IMAGE -c /path/config.yaml`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sidecar ./sidecar
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
USER 10001:10001
WORKDIR /

# 15000: admin API (probes, metrics); 15001: forward-proxy listener.
EXPOSE 15000 15001
ENTRYPOINT ["sidecar", "run"]
