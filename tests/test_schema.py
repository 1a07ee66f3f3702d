"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): valid and
invalid requests to every operation; no response may be a 5xx or break the documented schema,
and no request the schema calls valid may be refused as malformed (400): the schema and the
validation agree.

The server is a live `make_stack()` uvicorn on the test's event loop, so schemathesis (which is
synchronous) runs in a worker thread while the loop keeps serving. It runs in both AUTH_MODEs, with
an admin key on every request."""

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.result import Err
from solders.pubkey import Pubkey

from shared import apikeys
from shared.grammar import PUBKEY_FORMAT
from tests.conftest import StackFactory

# Per operation and generation mode: a fixed budget (~1 min here); raise it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "50"))
CHECKS: list[Callable[..., Any]] = [not_a_server_error, response_schema_conformance]

# Mints are base58 of exactly 32 bytes, which no pattern can say; the schema names the format.
schemathesis.openapi.format(
    PUBKEY_FORMAT, st.binary(min_size=32, max_size=32).map(lambda raw: str(Pubkey.from_bytes(raw)))
)


class Tally:
    """Cases sent and statuses answered, per generation mode (the fuzzing runs in a thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()

    def add(self, mode: GenerationMode, status: int) -> None:
        with self.lock:
            self.statuses[mode.value, status] += 1

    def cases(self) -> int:
        return sum(self.statuses.values())

    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    tally: Tally,
) -> str | None:
    """Run one operation's examples; the failure (after shrinking) as text, or None."""
    session = requests.Session()

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: a failure here is reproducible
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:  # a schemathesis.Case
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
        tally.add(mode, response.status_code)
        case.validate_response(response, checks=CHECKS)
        if mode is GenerationMode.POSITIVE:  # schema-valid: never refused as malformed
            assert response.status_code != 400, (
                f"schema-valid request refused: {case.method} {case.formatted_path} "
                f"query={case.query} headers={case.headers} body={case.body!r}: {response.text}"
            )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        return None  # nothing invalid to generate (e.g. no parameters, or only free strings)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports a FailureGroup
        return f"{operation.label} ({mode.value}): {exc}"
    finally:
        session.close()
    return None


def _fuzz(base_url: str, headers: dict[str, str], tally: Tally) -> tuple[list[str], list[str]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    labels, failures = [], []
    for result in schema.get_all_operations():
        assert not isinstance(result, Err), f"the OpenAPI document is invalid: {result.err()}"
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _fuzz_operation(operation, mode, base_url, headers, tally)
            if failure is not None:
                failures.append(failure)
    return labels, failures


@pytest.mark.parametrize("auth_mode", ["open", "keys"])
async def test_no_server_errors_and_every_response_matches_the_schema(
    make_stack: StackFactory, db: asyncpg.Connection, auth_mode: str
) -> None:
    stack = await make_stack(workers=1, auth_mode=auth_mode)
    # A valid admin key on every request, in both modes: the schema declares the key headers,
    # so generated cases carry made-up keys, which are (rightly) 401 and then 429; ours wins.
    admin = await apikeys.create_key(db, "fuzz", [apikeys.Scope.ADMIN])
    headers = {"Authorization": f"Bearer {admin.key}"}
    if auth_mode == "keys":
        refused = await stack.http.get("/api/orders")
        assert refused.status_code == 401  # the key is what lets the run through
    tally = Tally()
    labels, failures = await asyncio.to_thread(_fuzz, stack.base_url, headers, tally)
    print(f"schemathesis ({auth_mode}): {tally.cases()} cases, {tally.server_errors()} 5xx")
    print("by (mode, status):", dict(sorted(tally.statuses.items())))
    # The run covered the API (the WebSocket route is not an OpenAPI operation).
    assert {
        "POST /api/orders/execute",
        "GET /api/orders",
        "GET /api/orders/{order_id}",
        "GET /api/stats",
        "GET /api/quotes",
        "GET /health",
        "POST /api/sim/launches",
        "POST /api/admin/keys",
        "GET /api/admin/keys",
        "DELETE /api/admin/keys/{key_id}",
        "PUT /api/admin/accounts/{account}/limits",
        "POST /api/ws-tokens",
        "GET /api/tokens",
        "GET /api/markets",
    } <= set(labels), labels
    assert not failures, "\n\n".join(failures)
    assert tally.server_errors() == 0
    # Both modes ran, and the positive cases were mostly accepted (not all refused as 4xx).
    positive = {s: n for (m, s), n in tally.statuses.items() if m == "positive"}
    assert sum(n for s, n in positive.items() if s < 300) > sum(positive.values()) // 4, positive
    assert any(m == "negative" for m, _ in tally.statuses), tally.statuses
