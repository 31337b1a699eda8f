# One image for both daemons: `scout-exporter` and `scout-sidecar`.
FROM python:3.11-slim

WORKDIR /opt/scout
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY ai_sidecar ./ai_sidecar
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home scout

COPY docs/examples/scout-exporter.yml /etc/scout/scout-exporter.yml
USER scout
EXPOSE 8781 8782
CMD ["scout-exporter", "--config.file=/etc/scout/scout-exporter.yml"]
