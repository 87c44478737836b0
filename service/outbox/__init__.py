"""The transactional outbox: the events table relayed to NATS JetStream."""
