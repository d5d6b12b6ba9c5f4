# Fanpin's long-running processes (worker, sink, web) in one image; docker-compose.yml picks
# the process with `command:`. Checked by hadolint in tests/unit/test_deploy.py.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FANPIN_VAR_DIR=/var/lib/fanpin

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fanpin fanpin
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY consumers consumers
# Install as a regular package (not editable), then drop the sources and the build tree.
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && groupadd --system --gid 10001 fanpin \
    && useradd --system --uid 10001 --gid fanpin --home-dir /var/lib/fanpin --no-create-home \
       --shell /usr/sbin/nologin fanpin \
    && mkdir -p /var/lib/fanpin \
    && chown fanpin:fanpin /var/lib/fanpin

WORKDIR /var/lib/fanpin
USER 10001:10001
# 8080: the watch list (fanpin web, with /metrics); 18091/18092: worker/sink /metrics.
EXPOSE 8080 18091 18092
CMD ["fanpin", "--help"]
