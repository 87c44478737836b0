"""``/openapi.json`` is true: schemathesis finds no 5xx and no answer outside the schema.

(One 5xx is an answer, not a failure: 503 ``not_caught_up`` for a ``min_position``
beyond what the server has, as docs/api.md#consistency-min_position says. Any other
5xx is a failure.)

A real ``keyledger serve`` runs on a local port (its own scratch database);
every operation of the document gets a bounded number of generated
requests, sent with a valid admin key (and the same key as the proxy's
service key for ``/v1/authorize``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_headers_conformance,
    response_schema_conformance,
)

from bench.support import scratch_database
from service.http.openapi import OPERATIONS
from tests.support.serve_process import Served, served

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
async def contract_server(postgres_server_url: str) -> AsyncIterator[Served]:
    async with scratch_database(postgres_server_url, prefix="keyledger_contract") as url:
        with served(url) as server:
            yield server


def no_server_error(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx, except the documented 503 ``not_caught_up`` (a ``min_position`` past the log)."""
    if response.status_code < 500:
        return
    code = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        code = response.json()["error"]["code"]
    if (response.status_code, code) != (503, "not_caught_up"):
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")


# A stream that never ends cannot be called like the others: test_event_stream.py covers it.
NOT_CALLED = {"GET /v1/orgs/{org_id}/events/stream"}


def _check_operation(operation: schemathesis.APIOperation, server: Served) -> None:
    if operation.label in NOT_CALLED:
        return
    key = server.admin_key
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=server.url,
            headers={"Authorization": f"Bearer {key}", "X-Keyledger-Service-Key": key},
            checks=[no_server_error, response_schema_conformance, response_headers_conformance],
            timeout=10,
        )

    check()


def test_the_server_keeps_its_contract(contract_server: Served) -> None:
    # One loop over the operations rather than schemathesis' pytest loader, which needs a
    # pytest internal (Function._nodeid) that pytest 9 no longer has.
    schema = schemathesis.openapi.from_url(f"{contract_server.url}/openapi.json")
    failures = []
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        checked.add(operation.label)
        try:
            _check_operation(operation, contract_server)
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")
    # schemathesis leaves out the operation that serves the document itself.
    expected = {f"{op.method.upper()} {op.path}" for op in OPERATIONS if op.path != "/openapi.json"}
    assert checked == expected
    assert not failures, "\n\n".join(failures)
