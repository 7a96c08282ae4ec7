"""genrec serve under hostile load: how the history was read is in the answer, every request's
cost is bounded (history cap, prompt budget, queue bound, deadline), and a request is answered
the same alone and in a concurrent batch, status included."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from genrec import Limits  # noqa: E402
from genrec.serving.http import ServeConfig, create_app  # noqa: E402

from helpers import TITLES, catalog_of  # noqa: E402

MIXED = [
    {"history": ["i1", "Heat"], "k": 3, "with_history": True},  # by ID and by title
    {"history": ["The Matrix Reloded"], "k": 3, "with_history": True},  # fuzzy
    {"history": ["The Matrix Reloded"], "k": 3, "min_match_score": 99},  # refused as unknown
    {"history": ["zzz no such film at all"], "k": 3},  # unknown
    {"history": ["i2"] * 500, "k": 3, "with_history": True},  # over the history cap: cut
    {"history": ["i2"] * 500, "k": 3, "strict_history": True},  # over the cap, strictly: refused
    {"history": ["i3"], "k": 0},  # malformed
    {"history": ["i4", "i5"], "k": 2},
]


async def _post_all(app, bodies, concurrent: bool):
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            if concurrent:
                return await asyncio.gather(*(c.post("/recommend", json=b) for b in bodies)), (await c.get("/metrics")).text
            return [await c.post("/recommend", json=b) for b in bodies], (await c.get("/metrics")).text


def _answer(response):
    body = response.json()
    if response.status_code != 200:
        return response.status_code, body["error"]["type"]
    items = body["items"] if isinstance(body, dict) else body
    return 200, [r["item_id"] for r in items], body.get("history") if isinstance(body, dict) else None


def test_mixed_requests_answer_the_same_alone_and_batched(make_rec):
    rec = make_rec(catalog_of(TITLES), limits=Limits(max_history_items=50))
    alone, _ = asyncio.run(_post_all(create_app(rec, ServeConfig(batch_window_ms=0, max_batch=1)), MIXED, concurrent=False))
    together, metrics = asyncio.run(_post_all(create_app(rec, ServeConfig(batch_window_ms=200, max_batch=16)), MIXED, concurrent=True))
    assert [_answer(r) for r in together] == [_answer(r) for r in alone]
    statuses = [r.status_code for r in alone]
    assert statuses == [200, 200, 404, 404, 200, 400, 422, 200]
    read = alone[0].json()["history"]
    assert [(h["given"], h["item_id"], h["match"]) for h in read] == [("i1", "i1", "id"), ("Heat", "i3", "title")]
    fuzzy = alone[1].json()["history"][0]
    assert (fuzzy["item_id"], fuzzy["match"]) == ("i6", "fuzzy") and 90 <= fuzzy["score"] < 100
    assert "closest: 'The Matrix Reloaded'" in alone[2].json()["error"]["message"]
    capped = alone[4].json()
    assert capped["history_used"] == 50 and capped["history_dropped"] == 450
    assert [h["left_out"] for h in capped["history"]].count("cap") == 450
    assert "Limits.max_history_items" in alone[5].json()["error"]["message"]
    assert isinstance(alone[7].json(), list)  # today's clients get today's answer
    batches = [line for line in metrics.splitlines() if line.startswith("genrec_batches_total")]
    assert any(not line.startswith('genrec_batches_total{size="1"}') for line in batches)


def test_a_full_queue_answers_503_at_once_with_retry_after(make_rec):
    rec = make_rec(catalog_of(TITLES))
    app = create_app(rec, ServeConfig(batch_window_ms=300, max_batch=16, max_queue=2))

    async def run():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                started = time.perf_counter()
                answers = await asyncio.gather(*(c.post("/recommend", json={"history": [f"i{n}"], "k": 2}) for n in range(5)))
                return answers, time.perf_counter() - started, (await c.get("/metrics")).text

    answers, _, metrics = asyncio.run(run())
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 503, 503, 503]
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.json()["error"]["type"] == "Overloaded" and int(refused.headers["Retry-After"]) >= 1
    assert 'genrec_rejected_total{reason="queue_full"} 3' in metrics


def test_a_request_past_its_deadline_is_504_and_frees_the_model(make_rec, monkeypatch):
    """A slow decode (a stand-in sleeps between beam-search steps) runs past the deadline: the
    request is answered 504, and the decode stops at its next step instead of running on."""
    import importlib

    search = importlib.import_module("genrec.decoding.beam_search")  # (the package's beam_search is the function)

    rec = make_rec(catalog_of(TITLES))
    steps = []
    real = search._mask

    def slow_mask(*args, **kwargs):
        steps.append(time.monotonic())
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "_mask", slow_mask)
    app = create_app(rec, ServeConfig(batch_window_ms=0, request_timeout_s=0.5))

    async def run():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                late = await c.post("/recommend", json={"history": ["i1"], "k": 5})
                await asyncio.sleep(1.0)  # what the model does after the answer
                return late, len(steps), (await c.get("/metrics")).text

    late, steps_run, metrics = asyncio.run(run())
    assert late.status_code == 504 and late.json()["error"]["type"] == "DeadlineExceeded"
    assert steps_run <= 4  # about 0.5 s of 0.3 s steps, then the search stopped (unbounded: a step per title token)
    assert "genrec_timeouts_total" in metrics and 'stage="' in metrics
