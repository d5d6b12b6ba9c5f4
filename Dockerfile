FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fanpin fanpin
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY consumers consumers
COPY scripts scripts
COPY deploy deploy
RUN pip install --no-cache-dir . && useradd --system fanpin && mkdir -p /var/lib/fanpin \
    && chown fanpin /var/lib/fanpin
USER fanpin
CMD ["fanpin", "--help"]
