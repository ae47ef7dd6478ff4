"""Real-time e-commerce ingestion: orders and payments from Pub/Sub into one Cassandra fact table."""
