"""The one settings object, read from ``KEYLEDGER_*`` environment variables."""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from events.servers import nats_servers
from events.subjects import DEFAULT_PREFIX, DEFAULT_STREAM
from service.domain.durations import parse_lead_times

PREFIX = "KEYLEDGER_"
# A pepper shorter than this is refused: every stored secret hash is only as strong as it.
MIN_PEPPER_LENGTH = 32
EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


class SettingsError(RuntimeError):
    """Settings that cannot run; the message names each ``KEYLEDGER_*`` variable and why."""


class Settings(BaseModel):
    """Every tunable of keyledger. Field ``foo`` is env var ``KEYLEDGER_FOO``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    database_url: str | None = None
    # One NATS server or a comma-separated list of a cluster's servers (docs/security.md §9).
    nats_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # HMAC key for stored secret hashes; required by `serve`, made and kept by `dev`.
    pepper: SecretStr | None = None
    max_active_keys_per_org: int = Field(10, ge=1)
    data_dir: Path = Path(".keyledger")
    nats_stream: str = DEFAULT_STREAM
    nats_subject_prefix: str = DEFAULT_PREFIX
    # Core NATS subject on which replicas share their rate limit counts; default
    # ``<nats_subject_prefix>-limits`` (a sibling of the events' subjects, outside the stream).
    nats_limits_subject: str | None = None
    nats_duplicate_window_seconds: float = Field(120.0, gt=0)
    # Copies JetStream keeps of the stream: 3 on a 3-node cluster, so losing a node loses nothing.
    nats_stream_replicas: int = Field(1, ge=1, le=5)
    db_pool_min_size: int = Field(2, ge=1)
    db_pool_max_size: int = Field(10, ge=1)
    # Bounded waits: for the log's append lock (a command then gets 503 with Retry-After),
    # and for any one statement on the connection pool (asyncpg's command_timeout).
    append_lock_timeout_seconds: float = Field(5.0, gt=0, le=600)
    db_command_timeout_seconds: float = Field(30.0, gt=0)
    # The group commit: commands per transaction at most (a batch takes everything waiting up
    # to this), and commands waiting at most before more are refused (503 overloaded).
    command_batch_max: int = Field(256, ge=1, le=10000)
    command_queue_limit: int = Field(256, ge=1)
    idempotency_ttl_hours: int = Field(24, ge=1)
    expiry_sweep_interval_seconds: float = Field(1.0, gt=0)
    # Lead times of KeyExpiringSoon warnings, e.g. "7d,1d" (docs/events.md); "none": no warnings.
    expiry_warnings: str = "7d,1d"
    # Projection runner: events per transaction, and the safety-net poll when no NOTIFY comes.
    projection_batch_size: int = Field(1000, ge=1, le=10000)
    projection_fallback_poll_seconds: float = Field(5.0, gt=0)
    # Verification index: PostgreSQL poll when no NOTIFY comes; last_used_at flush period.
    verify_fallback_poll_seconds: float = Field(2.0, gt=0)
    usage_flush_interval_seconds: float = Field(10.0, gt=0, le=50)
    # Registry snapshots for cold start: how often one replica writes one (0: never), how
    # many are kept, and whether a starting replica begins from the newest that checks out.
    snapshot_interval_seconds: float = Field(300.0, ge=0)
    snapshot_keep: int = Field(2, ge=1, le=100)
    snapshot_load: bool = True
    # Usage analytics (docs/api.md#usage-analytics): verifications per key, minute and code.
    usage_analytics: bool = True
    usage_retention_days: int = Field(90, ge=1, le=3650)
    # /readyz: how many events the index, projections and outbox relay may trail the log head.
    ready_max_lag: int = Field(100, ge=0)
    # How often a replica compares the log head with its witnesses (JetStream, checkpoints).
    witness_check_interval_seconds: float = Field(5.0, gt=0)
    # GET /v1/orgs/{org}/events/stream: a comment line this often keeps idle proxies from
    # closing the stream; a watcher this many events behind is dropped (it resumes by position).
    event_stream_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    event_stream_buffer: int = Field(1000, ge=1, le=100000)
    # `keyledger serve`: seconds to let in-flight requests finish after SIGTERM.
    shutdown_timeout_seconds: float = Field(10.0, gt=0)
    log_level: str = "info"
    # Milliseconds an access line may wait to be written together with others (fewer write
    # calls under load); 0 writes each event-loop turn's lines at its end.
    access_log_linger_ms: float = Field(0.0, ge=0, le=1000)
    # asyncio event loop: auto (uvloop when installed), asyncio, or uvloop (keyledger[fast]).
    event_loop: EventLoopChoice = "auto"
    # Proxies whose X-Forwarded-For / X-Real-IP GET /v1/authorize believes (comma-separated
    # IPv4/IPv6 networks); empty: the peer's own address is the client's.
    trusted_proxies: str = ""
    # Webhooks (docs/api.md#webhooks): receivers on loopback/private/link-local addresses are
    # refused unless allowed (SSRF, docs/security.md); retries back off exponentially from
    # the base to the cap, for up to retry_for seconds (24 h), then the event is dead-lettered.
    webhooks_allow_private: bool = False
    # Leak reports (docs/api.md#leak-reports): the file of the scanner's public keys, in
    # GitHub's JSON format (unset: POST /v1/leaks answers 404), and what a leak does to a key.
    leak_report_keys: Path | None = None
    leak_action: Literal["revoke", "disable", "report"] = "revoke"
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    webhook_retry_for_seconds: float = Field(86400.0, gt=0)
    # How often the delivering replica looks for endpoints added or removed.
    webhook_refresh_seconds: float = Field(2.0, gt=0)

    @field_validator("nats_url")
    @classmethod
    def _valid_server_list(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # InvalidServerList (a ValueError) names the bad entry; a good list is kept normalised.
        return ",".join(nats_servers(value))

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        networks = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return ",".join(str(ipaddress.ip_network(n, strict=False)) for n in networks)
        except ValueError:
            raise ValueError("a comma-separated list of IPv4/IPv6 networks") from None

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed (once per value: it is read on every authorize)."""
        return _networks(self.trusted_proxies)

    @property
    def limits_subject(self) -> str:
        """Where replicas share rate limit counts (``nats_limits_subject`` or its default)."""
        return self.nats_limits_subject or f"{self.nats_subject_prefix}-limits"

    @field_validator("expiry_warnings")
    @classmethod
    def _valid_lead_times(cls, value: str) -> str:
        parse_lead_times(value)  # ValueError names the problem
        return value

    @property
    def expiry_lead_times(self) -> tuple[tuple[str, timedelta], ...]:
        """``expiry_warnings`` parsed: (text, duration), longest first."""
        return parse_lead_times(self.expiry_warnings)

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as the list of servers nats-py connects to; empty without NATS."""
        return nats_servers(self.nats_url) if self.nats_url else []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {
            name.removeprefix(PREFIX).lower(): value
            for name, value in environ.items()
            if name.startswith(PREFIX) and value != ""
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_described(exc)) from None

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied and validated."""
        return Settings.model_validate({**self.model_dump(), **changes})

    @property
    def pepper_bytes(self) -> bytes:
        """The HMAC key as bytes; refuses to run without one or with a short one."""
        if self.pepper is None or not self.pepper.get_secret_value():
            raise SettingsError("missing settings: KEYLEDGER_PEPPER")
        pepper = self.pepper.get_secret_value()
        if len(pepper) < MIN_PEPPER_LENGTH:
            raise SettingsError(
                f"KEYLEDGER_PEPPER is too short ({len(pepper)} characters; at least"
                f" {MIN_PEPPER_LENGTH} are required, e.g. from `openssl rand -hex 32`)"
            )
        return pepper.encode()


@functools.lru_cache(maxsize=8)
def _networks(listed: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in listed.split(",") if n)


def _described(error: ValidationError) -> str:
    """One line per invalid setting, by variable name; never the value (it may be a secret)."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        variable = PREFIX + "_".join(str(part) for part in problem["loc"]).upper()
        lines.append(f"{variable}: {problem['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(lines)
