# Image for the tombstone CLI: workers, requests and proof queries.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
COPY deploy ./deploy
COPY consumers ./consumers
RUN pip install --no-cache-dir .
ENV TOMBSTONE_DATA_DIR=/data TOMBSTONE_INVENTORY=/app/deploy/inventory.toml
VOLUME /data
ENTRYPOINT ["tombstone"]
