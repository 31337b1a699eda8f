# One image for both daemons: `scout-exporter` and `scout-sidecar`.
FROM python:3.11-slim

WORKDIR /opt/scout
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
COPY ai_sidecar ./ai_sidecar
# /var/lib/scout holds the sidecar's SQLite store (a volume in docker-compose.yml).
# gcc only while installing: it builds the exporter's optional C loops (setup.py),
# then goes, so the image stays slim.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home scout \
    && mkdir -p /var/lib/scout && chown scout /var/lib/scout

COPY docs/examples/scout-exporter.yml /etc/scout/scout-exporter.yml
COPY docs/examples/scout-sidecar.yml /etc/scout/scout-sidecar.yml
USER scout
EXPOSE 8781 8782
CMD ["scout-exporter", "--config.file=/etc/scout/scout-exporter.yml"]
