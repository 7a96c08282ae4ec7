"""The tools for chat assistants: JSON-schema definitions generated from the signatures and
the Limits, argument validation, and the MCP server over stdio (the official client), on the tiny model."""

from __future__ import annotations

import json
import os
import sys

import pytest

from genrec import Limits
from genrec.serving import tools
from genrec.serving.tools import ToolError, call_tool, definition, tool_definitions, validate_arguments

from helpers import TITLES, catalog_of


@pytest.fixture
def rec(make_rec):
    return make_rec(catalog_of(TITLES, year=1999))


def test_tool_definitions_are_valid_json_schema_matching_the_signatures():
    import inspect

    import jsonschema

    defs = tool_definitions()
    assert {d["function"]["name"] for d in defs} == {"recommend", "rank", "explain", "chat", "ground", "search_catalog"}
    for d in defs:
        assert d["type"] == "function" and d["function"]["description"]
        schema = d["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(schema)
        params = list(inspect.signature(tools.TOOLS[d["function"]["name"]]).parameters)[1:]
        assert list(schema["properties"]) == params
        assert all(p.get("description") for p in schema["properties"].values())
    recommend = definition(tools.recommend)["function"]["parameters"]
    assert recommend["required"] == [] and recommend["properties"]["k"]["default"] == 10
    chat = definition(tools.chat)["function"]["parameters"]["properties"]["messages"]["items"]
    assert chat["properties"]["role"]["enum"] == ["system", "user", "assistant"]


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("recommend", {}),
        ("recommend", {"history": ["1", "Heat"], "k": 3, "request": "something tense"}),
        ("rank", {"candidates": ["1", "2"]}),
        ("explain", {"item": "Heat", "history": []}),
        ("chat", {"messages": [{"role": "user", "content": "hi"}], "k": 2}),
        ("ground", {"text": "the matrix"}),
        ("search_catalog", {"query": "matrix", "limit": 3}),
    ],
)
def test_schema_accepts_what_the_functions_accept(name, arguments):
    assert validate_arguments(name, arguments) == arguments


@pytest.mark.parametrize(
    "name, arguments, problem",
    [
        ("recommend", {"k": 0}, "k: 0 is less than the minimum of 1"),
        ("recommend", {"k": "3"}, "k: '3' is not of type 'integer'"),
        ("recommend", {"history": "1,2"}, "history: '1,2' is not of type 'array'"),
        ("recommend", {"colour": "red"}, "Additional properties are not allowed"),
        ("rank", {}, "'candidates' is a required property"),
        ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages/0/role"),
        ("nope", {}, "unknown tool 'nope'"),
        ("recommend", [1, 2], "arguments must be a JSON object"),
        ("ground", {"text": "x" * 5000}, "is too long"),
    ],
)
def test_schema_rejects_bad_calls_with_a_clear_message(name, arguments, problem):
    with pytest.raises(ToolError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        validate_arguments(name, arguments)


def test_call_tool_runs_every_tool(rec):
    assert len(call_tool(rec, "recommend", {"history": ["i0"], "k": 3})) == 3
    assert {r["item_id"] for r in call_tool(rec, "rank", {"candidates": ["i1", "i2"]})} == {"i1", "i2"}
    assert call_tool(rec, "explain", {"item": "i1"})["item_id"] == "i1"
    assert len(call_tool(rec, "chat", {"messages": [{"role": "user", "content": "hi"}], "k": 2})["items"]) == 2
    assert call_tool(rec, "ground", {"text": "the matrix"})[0]["item_id"] == "i5"
    assert call_tool(rec, "search_catalog", {"query": "matrix"})[0]["year"] == 1999
    json.dumps([call_tool(rec, "recommend", {})])  # plain JSON data
    with pytest.raises(ToolError, match="unknown item ID|neither IDs nor titles"):
        call_tool(rec, "explain", {"item": "no such film at all"})


# ---------------------------------------------------------------------- MCP
def test_mcp_server_over_stdio_with_the_official_client(tiny_model_dir, tmp_path):
    pytest.importorskip("mcp")
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    catalog = tmp_path / "items.csv"
    catalog.write_text("item_id,title,year\n" + "".join(f"{n},{t},1999\n" for n, t in enumerate(TITLES) if "," not in t))
    env = {**os.environ, "GENREC_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "genrec.cli", "mcp", "--catalog", str(catalog), "--model", str(tiny_model_dir)], env=env
    )

    async def session_run():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            names = {t.name for t in listed.tools}
            ok = await session.call_tool("recommend", {"history": ["0", "Heat"], "k": 3})
            unknown = await session.call_tool("recommend", {"history": ["999"], "k": 3})
            malformed = await session.call_tool("recommend", {"k": "many"})
            oversized = await session.call_tool("ground", {"text": "x" * 200_000})
            nope = await session.call_tool("no_such_tool", {})
            again = await session.call_tool("ground", {"text": "the matrix"})
            return names, ok, unknown, malformed, oversized, nope, again

    names, ok, unknown, malformed, oversized, nope, again = anyio.run(session_run)
    assert {"recommend", "rank", "explain", "chat", "ground", "search_catalog"} <= names
    assert not ok.is_error
    items = json.loads(ok.content[0].text)
    assert len(items) == 3 and not {i["item_id"] for i in items} & {"0", "3"}
    assert unknown.is_error and "'999'" in unknown.content[0].text
    assert malformed.is_error and "integer" in malformed.content[0].text
    assert oversized.is_error and ("limit" in oversized.content[0].text or "too long" in oversized.content[0].text)
    assert nope.is_error and "unknown tool" in nope.content[0].text
    assert not again.is_error and json.loads(again.content[0].text)[0]["title"] == "The Matrix"  # still serving


def test_mcp_tool_calls_run_on_one_model_thread(rec, monkeypatch):
    """Every call on the same thread, not the event loop's nor a pool's next free one (bf16
    products from several threads slowed all of them)."""
    pytest.importorskip("mcp")
    import threading

    import anyio
    from mcp import types

    from genrec.serving import mcp_server

    threads = []
    real = mcp_server.call_tool
    monkeypatch.setattr(mcp_server, "call_tool", lambda *a: threads.append(threading.current_thread().name) or real(*a))
    handler = mcp_server.build_server(rec).get_request_handler("tools/call").handler

    async def calls():
        params = types.CallToolRequestParams(name="ground", arguments={"text": "the matrix"})
        return [await handler(None, params) for _ in range(3)]

    results = anyio.run(calls)
    assert all(not r.is_error for r in results)
    assert len(threads) == 3 and len(set(threads)) == 1 and threads[0].startswith("genrec-model")


def test_tool_schemas_follow_the_limits_the_recommender_enforces():
    default = definition(tools.recommend)["function"]["parameters"]["properties"]
    assert default["k"]["maximum"] == min(Limits().max_k, Limits().max_beams)  # a search keeps at least k beams
    assert definition(tools.recommend, Limits(max_beams=2000))["function"]["parameters"]["properties"]["k"]["maximum"] == 1000
    assert default["history"]["maxItems"] == Limits().max_history
    tight = Limits(max_k=7, max_history=3, max_request_chars=20)
    props = definition(tools.recommend, tight)["function"]["parameters"]["properties"]
    assert (props["k"]["maximum"], props["history"]["maxItems"], props["request"]["maxLength"]) == (7, 3, 20)
    with pytest.raises(ToolError, match="k"):
        validate_arguments("recommend", {"k": 8}, tight)
    validate_arguments("recommend", {"k": 7}, tight)


def test_call_tool_validates_against_the_recommenders_limits(make_rec):
    rec = make_rec(catalog_of(TITLES), limits=Limits(max_k=3))
    with pytest.raises(ToolError, match="k"):
        call_tool(rec, "recommend", {"k": 4})
    assert len(call_tool(rec, "recommend", {"k": 3, "history": ["Alien"]})) == 3

