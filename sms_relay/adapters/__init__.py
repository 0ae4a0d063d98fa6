"""One module per technology: PostgreSQL, Kafka, Twilio."""
