"""Shared test infrastructure: real PostgreSQL and NATS, embedded when not given."""
