"""The ingest process: `POST /v1/events` → validated, acknowledged messages on Kafka."""
