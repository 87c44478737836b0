"""keyledger service: commands, domain, HTTP API, event store, CLI."""
