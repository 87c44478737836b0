"""PostgreSQL adapters: migrations, the event store, the write side's key registry."""
