"""The task family (zero-shot requests, ranking, explanations, conversation) and the assistant
interfaces (JSON-schema tools, MCP server), on the tiny model."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from genrec import Catalog, LimitError, UnknownItemError
from genrec.decoding import score_continuations
from genrec.tools import ToolError, call_tool, definition, tool_definitions, validate_arguments

from test_decoding import TITLES, catalog_of


@pytest.fixture
def rec(make_rec):
    return make_rec(catalog_of(TITLES, year=1999))


def reference_logprob(model, prompt, continuation):
    """The plain way: one forward pass over prompt + continuation, sum of the continuation's log-probs."""
    ids = torch.tensor([list(prompt) + list(continuation)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(continuation))


def test_score_continuations_matches_one_pass_per_candidate(tiny_model, tokenizer):
    prompt = tokenizer("<|im_start|>user\nPick one<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    continuations = [[504, 25343, 2], [32595, 264, 2], [504, 2], [9531]]
    batched = score_continuations(tiny_model, prompt, continuations, chunk_tokens=4)  # several chunks
    for got, cont in zip(batched, continuations):
        assert got == pytest.approx(reference_logprob(tiny_model, prompt, cont), abs=1e-3)


def test_rank_orders_all_candidates_once(rec, tiny_model):
    recs = rec.rank(["i0"], ["i3", "Heat 2", "i5", "i3", "i20"])
    assert sorted(r.item_id for r in recs) == ["i20", "i3", "i4", "i5"]
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    # each score is the title's log-probability after the rank prompt, end marker included
    prompt = rec._encode_prompt(recs.prompt_text)
    index = rec.index_for("rank")
    for r in recs:
        seq = index.sequence(rec.catalog.title_number_of(r.item_id))
        assert r.score == pytest.approx(reference_logprob(tiny_model, prompt, seq), abs=1e-3)


def test_rank_length_normalisation_is_per_token(rec):
    total = {r.item_id: r.score for r in rec.rank([], ["i5", "i6", "i13"])}
    per_token = {r.item_id: r.score for r in rec.rank([], ["i5", "i6", "i13"], length_normalize=True)}
    index = rec.index_for("rank")
    for item_id, score in total.items():
        n_tokens = len(index.sequence(rec.catalog.title_number_of(item_id)))
        assert per_token[item_id] == pytest.approx(score / n_tokens, abs=1e-5)


def test_rank_errors(rec):
    with pytest.raises(UnknownItemError, match="'nope'"):
        rec.rank([], ["i1", "nope"])
    with pytest.raises(LimitError):
        rec.rank([], "i1")
    assert list(rec.rank([], [])) == []


def test_zero_shot_request_without_history(rec):
    recs = rec.recommend(request="a tense heist film", k=5)
    assert len(recs) == 5 and "I am looking for: a tense heist film" in recs.prompt_text


def test_explain_is_deterministic_and_sampling_is_seeded(rec):
    a = rec.explain(["i0", "i3"], "i5", max_new_tokens=12)
    b = rec.explain(["i0", "i3"], "The Matrix", max_new_tokens=12)
    assert a.text == b.text and str(a) == a.text and a.item_id == "i5"
    s1 = rec.explain(["i0"], "i5", max_new_tokens=12, do_sample=True, seed=7)
    s2 = rec.explain(["i0"], "i5", max_new_tokens=12, do_sample=True, seed=7)
    assert s1.text == s2.text
    assert all(m.item_id in rec.catalog for m in a.mentions)
    with pytest.raises(LimitError):
        rec.explain([], "i5", max_new_tokens=10_000)


def test_explain_grounds_the_items_it_names(rec, monkeypatch):
    monkeypatch.setattr(rec, "_generate", lambda *a, **k: 'Like Alien and "Heat", it keeps you tense; unlike Up.')
    explanation = rec.explain(["i0"], "i5")
    assert [m.title for m in explanation.mentions] == ["Alien", "Heat", "Up"]


def test_chat_excludes_mentioned_and_rejected_items(rec):
    messages = [
        {"role": "system", "content": "You help people pick films."},
        {"role": "user", "content": "I loved Alien and The Matrix. I hated Jaws though."},
        {"role": "assistant", "content": "Then maybe Heat?"},
        {"role": "user", "content": "Seen it. Something else, please."},
    ]
    response = rec.chat(messages, k=4)
    mentioned = {m.title for m in response.mentioned}
    assert mentioned == {"Alien", "The Matrix", "Jaws", "Heat"}
    assert {m.title for m in response.rejected} == {"Jaws"}
    assert len(response.items) == 4 and not {r.title for r in response.items} & mentioned
    assert all(r.item_id in rec.catalog for r in response.items)
    for r in response.items:
        assert r.title in response.text


@pytest.mark.parametrize(
    "messages",
    [[], "hello", [{"role": "user"}], [{"role": "robot", "content": "x"}], [{"role": "assistant", "content": "x"}]],
)
def test_chat_rejects_malformed_conversations(rec, messages):
    with pytest.raises(LimitError):
        rec.chat(messages)


# ---------------------------------------------------------------------- tool definitions
def test_tool_definitions_are_valid_json_schema_matching_the_signatures():
    import inspect

    import jsonschema

    from genrec import tools

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


def test_cli_rank_explain_chat(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from genrec.cli import main

    catalog = tmp_path / "items.csv"
    catalog.write_text("item_id,title\n1,Alien\n2,Aliens\n3,Heat\n4,Jaws\n")
    base = ["--catalog", str(catalog), "--model", str(tiny_model_dir)]
    assert main(["rank", *base, "--candidates", "1,2,3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["explain", *base, "--item", "Heat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["item_id"] == "3"
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "I liked Alien. More like it?"}]))
    assert main(["chat", *base, "--messages", str(messages), "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["items"]) == 2 and "1" not in {i["item_id"] for i in out["items"]}
    messages.write_text("{not json")
    assert main(["chat", *base, "--messages", str(messages)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_demo_catalog_items_have_tool_friendly_attributes():
    item = Catalog.demo().item("1")
    json.dumps(item)
