"""Webhooks: endpoints registered per org, and signed deliveries of the org's events."""
