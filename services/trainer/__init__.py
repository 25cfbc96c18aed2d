"""The trainer process: a Kafka consumer-group member training into the Redis table."""
