"""genrec serve fuzzed against its own OpenAPI document with Schemathesis: seeded, bounded
examples for every endpoint, in process; no 5xx, and every response as the document says it is.
(Each operation's cases come from Schemathesis' strategy for it: its pytest loader for fixtures
does not run on this pytest.)"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from genrec import Limits  # noqa: E402
from genrec.serving.http import ServeConfig, create_app  # noqa: E402

from helpers import TITLES, catalog_of  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tiny_model, tokenizer, tmp_path_factory):
    from genrec import Recommender

    rec = Recommender(catalog_of(TITLES), model=tiny_model, tokenizer=tokenizer, cache_dir=tmp_path_factory.mktemp("fuzz"),
                      limits=Limits(max_history_items=20, max_prompt_tokens=512))  # fmt: skip
    app = create_app(rec, ServeConfig(batch_window_ms=0, max_queue=8, request_timeout_s=30))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _checks() -> list:
    """No 5xx, and a documented status, content type, body and headers. (Not the acceptance of
    every schema-valid body: a schema cannot say that a conversation needs a user turn, or that
    a title must be in the catalog; those are refused with a documented 400 or 404.)"""
    from schemathesis import checks

    return [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
            checks.response_schema_conformance, checks.response_headers_conformance]  # fmt: skip


def _wait_until_ready(operations: list) -> None:
    """/health answers 503 (documented) until the app's start-up has built the title index; the
    fuzzing below asserts no 5xx, so it starts once the app is up (its first call starts it)."""
    import time

    health = next(op for op in operations if op.path == "/health")
    for _ in range(300):
        if health.Case().call().status_code == 200:
            return
        time.sleep(0.1)
    pytest.fail("genrec serve did not become ready within 30 s")


def test_every_endpoint_answers_as_documented(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    _wait_until_ready(operations)
    assert {op.path for op in operations} >= {"/recommend", "/rank", "/explain", "/chat", "/ground", "/search_catalog", "/health"}
    calls: dict[str, set[int]] = {}
    for operation in operations:
        for mode in schemathesis.GenerationMode:  # schema-valid bodies, and bodies that break it
            if mode is schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # (nothing to break: no parameters, no body)

            @settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(mode))
            def answers_as_documented(case):
                response = case.call_and_validate(checks=_checks())
                calls.setdefault(operation.path, set()).add(response.status_code)

            answers_as_documented()
    assert all(status < 500 for statuses in calls.values() for status in statuses), calls
    assert {200, 422} <= calls["/recommend"], calls  # valid and invalid bodies both reached it
