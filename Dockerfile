# sms-relay: one image, a command per deployable (consumer, callbacks, simulator, migrate,
# topics, ...). docker compose builds it for the local stack; the entrypoint is the CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0

WORKDIR /app
# The dependencies first, exactly as uv.lock pins them (hashes checked), in a layer of
# their own that only a change of the lock rebuilds. uv only exports the list here (the
# version scripts/venv bootstraps); pip installs it, and uv leaves the image again.
# confluent-kafka and psycopg[binary] ship manylinux wheels: no compiler needed.
COPY pyproject.toml uv.lock ./
RUN pip install uv==0.13.9 \
    && uv export --frozen --no-emit-project --no-dev --format requirements-txt \
        --output-file /tmp/requirements.txt \
    && pip uninstall -y uv \
    && pip install --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY schemas ./schemas
COPY sms_relay ./sms_relay
COPY consumer ./consumer
COPY callbacks ./callbacks
COPY cli ./cli
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent sms-relay

USER sms-relay
# Callbacks (8080), consumer metrics (9101), simulator (8031).
EXPOSE 8080 9101 8031
ENTRYPOINT ["sms-relay"]
CMD ["--help"]
