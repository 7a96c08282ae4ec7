"""genrec serve: the app in-process on the tiny model (FastAPI's test client), and one real server
over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from genrec.serving.http import ServeConfig, create_app  # noqa: E402
from genrec.serving.tools import TOOLS, tool_definitions  # noqa: E402

from helpers import TITLES, catalog_of  # noqa: E402


@pytest.fixture
def rec(make_rec):
    return make_rec(catalog_of(TITLES))


@pytest.fixture
def client(rec):
    with TestClient(create_app(rec, ServeConfig(batch_window_ms=20, max_batch=8))) as c:
        yield c


def test_every_tool_is_an_endpoint_documented_from_the_tool_definitions(client, rec):
    spec = client.get("/openapi.json").json()
    for definition in tool_definitions(rec.limits):
        fn = definition["function"]
        op = spec["paths"][f"/{fn['name']}"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        schema = spec["components"]["schemas"][ref]
        assert set(schema["properties"]) == set(fn["parameters"]["properties"])
        assert set(schema.get("required", [])) == set(fn["parameters"]["required"])
        for pname, prop in fn["parameters"]["properties"].items():
            got = schema["properties"][pname]
            for bound in ("maximum", "minimum", "maxLength", "maxItems"):
                if bound in prop:
                    assert bound in json.dumps(got) and str(prop[bound]) in json.dumps(got), (fn["name"], pname, bound)
    assert client.get("/docs").status_code == 200


def test_endpoints_answer_what_the_tools_answer(client, rec):
    for name, body in [
        ("recommend", {"history": ["i1", "Heat"], "k": 3}),
        ("rank", {"candidates": ["i2", "i3", "Up"], "history": ["i1"]}),
        ("explain", {"item": "i2", "history": ["i1"]}),
        ("chat", {"messages": [{"role": "user", "content": "I loved Alien. Something like it?"}], "k": 2}),
        ("ground", {"text": "the matrix", "limit": 2}),
        ("search_catalog", {"query": "heat", "limit": 3}),
    ]:
        response = client.post(f"/{name}", json=body)
        assert response.status_code == 200, response.text
        # scores to float rounding: the first call of a template builds its prompt-prefix cache
        assert _rounded(response.json()) == _rounded(TOOLS[name](rec, **body)), name


def _rounded(data):
    if isinstance(data, float):
        return round(data, 3)
    if isinstance(data, dict):
        return {k: _rounded(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_rounded(v) for v in data]
    return data


def test_concurrent_recommends_are_batched_and_equal_one_by_one(rec):
    histories = [["i1"], ["i2", "i3"], [], ["Heat", "Up", "i7"], ["i4"], ["i9", "i8"]]
    serial = [rec.recommend(h, k=4) for h in histories]
    app = create_app(rec, ServeConfig(batch_window_ms=200, max_batch=8))

    async def run():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                answers = await asyncio.gather(*(c.post("/recommend", json={"history": h, "k": 4}) for h in histories))
                metrics = (await c.get("/metrics")).text
        return answers, metrics

    answers, metrics = asyncio.run(run())
    for got, want in zip(answers, serial):
        assert got.status_code == 200
        assert [r["item_id"] for r in got.json()] == [r.item_id for r in want]
        assert [r["score"] for r in got.json()] == pytest.approx([r.score for r in want], abs=1e-4)
    sizes = {int(line.split('"')[1]): float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("genrec_batches_total")}
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert 'genrec_requests_total{endpoint="/recommend",status="200"} 6' in metrics
    assert 'quantile="0.99"' in metrics


def test_errors_are_json_with_type_and_message(client):
    r = client.post("/recommend", json={"history": ["i1"], "k": 0})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "k"
    r = client.post("/recommend", json={"history": ["i1"], "kk": 3})
    assert r.status_code == 422 and "kk" in r.json()["error"]["message"]
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/recommend", json={"history": ["no such film at all"], "k": 2})
    assert r.status_code == 404 and r.json()["error"]["type"] == "UnknownItemError" and "no such film" in r.json()["error"]["message"]
    r = client.post("/ground", json={"text": "x" * 5000})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "text"
    r = client.post("/recommend", content=b"[" + b"1," * 600_000 + b"1]", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
    assert client.post("/nothing", json={}).status_code == 404


def test_a_bad_request_fails_alone_in_its_batch(rec):
    app = create_app(rec, ServeConfig(batch_window_ms=200))

    async def run():
        import httpx

        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await asyncio.gather(
                    c.post("/recommend", json={"history": ["i1"], "k": 2}),
                    c.post("/recommend", json={"history": ["not in the catalog zzz"], "k": 2}),
                    c.post("/recommend", json={"history": ["i2"], "k": 2}),
                )

    ok1, bad, ok2 = asyncio.run(run())
    assert (ok1.status_code, bad.status_code, ok2.status_code) == (200, 404, 200)


def test_unexpected_error_is_500_with_an_id_in_the_log(rec, caplog):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    rec.explain = boom
    with TestClient(create_app(rec), raise_server_exceptions=False) as c:
        r = c.post("/explain", json={"item": "i1"})
    body = r.json()["error"]
    assert r.status_code == 500 and body["type"] == "InternalError" and "secret" not in r.text and "Traceback" not in r.text
    assert body["id"] in caplog.text


def test_api_key(rec):
    with TestClient(create_app(rec, ServeConfig(api_key="s3cret"))) as c:
        assert c.post("/ground", json={"text": "heat"}).status_code == 401
        assert c.post("/ground", json={"text": "heat"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.post("/ground", json={"text": "heat"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/ground", json={"text": "heat"}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").json()["catalog_size"] == len(TITLES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_over_http_and_graceful_shutdown(tmp_path, tiny_model_dir):
    import httpx

    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{n},{t}\n" for n, t in enumerate(["Alien", "Heat", "Up", "Jaws", "Se7en"])))
    port = _free_port()
    env = {**os.environ, "GENREC_TEST_KEY": "k1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genrec.cli", "serve", "--catalog", str(items), "--model", str(tiny_model_dir),
         "--port", str(port), "--api-key-env", "GENREC_TEST_KEY", "--batch-window-ms", "1500"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": "k1"}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not become healthy")
        assert httpx.post(f"{base}/recommend", json={"history": ["Alien"]}, timeout=60).status_code == 401
        # a request in flight (waiting 1.5 s in the batching window) when SIGTERM comes still gets its answer
        import threading

        answers = []
        worker = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{base}/recommend", json={"history": ["Alien"], "k": 2}, headers=headers, timeout=60)))  # fmt: skip
        worker.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        assert answers and answers[0].status_code == 200 and len(answers[0].json()) == 2
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
