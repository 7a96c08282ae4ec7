"""runtime="onnxruntime": the model's blocks exported to ONNX and run by ONNX Runtime must search
exactly as torch does (the same titles, in the same order, scores to float rounding), through
every path of the search: one user and several (left padding), lookahead on and off, the
prompt-prefix cache, finished users dropped and pruned keys compacted."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from genrec.cli import main
from genrec.decoding import beam_search, onnx_runtime
from genrec.decoding.lean import LeanDecoder
from genrec.decoding.onnx_runtime import GRAPH_FILE, OnnxDecoder
from genrec.decoding.runtime import check_runtime
from genrec.encoder import model_fingerprint
from genrec.errors import ConfigError, MissingDependencyError

from helpers import catalog_of
from test_beam_search import random_titles
from test_lookahead import long_titles

HISTORIES = [["i1"], ["i3", "i5", "i7"], ["i2", "i4"], ["i0", "i9", "i11", "i13", "i15", "i17"]]


@pytest.fixture(params=[1, 64], ids=["one-row-calls", "every-call"])
def onnx_model(request, tiny_model, tmp_path):
    """Calls of one user in ONNX Runtime and bigger ones in torch (the default), or every call in it."""
    decoder = OnnxDecoder.from_model(tiny_model, model_fingerprint(tiny_model), tmp_path / "cache", max_rows=request.param)
    rows = []
    decoder.session = _Spy(decoder.session, rows)
    decoder.rows_run = rows
    return decoder


class _Spy:
    """An ONNX Runtime session that records how many rows each call fed."""

    def __init__(self, session, rows):
        self.session, self.rows = session, rows

    def run(self, outputs, feed):
        self.rows.append(len(feed["input_ids"]))
        return self.session.run(outputs, feed)


def _search(rec, model, histories, lookahead):
    jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
    hyps = beam_search(
        model, [j.prompt_ids for j in jobs], num_beams=6, num_return=6, index=rec.pipeline.index(jobs[0].ctx),
        banned_titles=[j.banned_titles for j in jobs], lookahead=lookahead, pad_token_id=rec.pad_token_id,
    )  # fmt: skip
    return [[(h.node, h.score) for h in user] for user in hyps]


def _assert_same(ours, reference):
    assert [[node for node, _ in user] for user in ours] == [[node for node, _ in user] for user in reference]
    for user, ref in zip(ours, reference):
        assert [score for _, score in user] == pytest.approx([score for _, score in ref], rel=1e-5, abs=1e-4)  # float rounding


@pytest.mark.parametrize("titles", [long_titles(60), random_titles(200, seed=5)], ids=["long", "random200"])
@pytest.mark.parametrize("lookahead", [True, False])
def test_search_is_torchs(make_rec, tiny_model, onnx_model, titles, lookahead):
    rec = make_rec(catalog_of(titles))
    for histories in (HISTORIES[:1], HISTORIES):
        reference = _search(rec, tiny_model, histories, lookahead)
        assert all(len(user) == 6 for user in reference)
        _assert_same(_search(rec, onnx_model, histories, lookahead), reference)
    assert onnx_model.rows_run and max(onnx_model.rows_run) <= onnx_model.max_rows
    assert onnx_model.max_rows == 1 or max(onnx_model.rows_run) > 1  # several users' rows went through it too


def test_recommender_runtime_gives_torchs_lists(make_rec, tmp_path):
    catalog = catalog_of(long_titles(60))
    torch_rec, onnx_rec = make_rec(catalog), make_rec(catalog, runtime="onnxruntime")
    assert isinstance(onnx_rec.lm.search_model, OnnxDecoder) and isinstance(torch_rec.lm.search_model, LeanDecoder)
    for rec in (torch_rec, onnx_rec):  # the template's shared prompt prefix is cached and reused
        rec.warm()
    ours = onnx_rec.recommend_batch(HISTORIES, k=5, batch_size=2)
    theirs = torch_rec.recommend_batch(HISTORIES, k=5, batch_size=2)
    assert [[r.item_id for r in user] for user in ours] == [[r.item_id for r in user] for user in theirs]
    assert list(tmp_path.glob(f"cache/onnx/*/{GRAPH_FILE}"))


def test_ranking_runs_in_onnx_runtime_with_transformers_order(make_rec):
    """Scoring given titles calls the decoder the search uses: a tree-masked pass of one row."""
    catalog = catalog_of(long_titles(60))
    ours, reference = make_rec(catalog, runtime="onnxruntime"), make_rec(catalog, runtime="transformers")
    rows: list[int] = []
    ours.lm.search_model.session = _Spy(ours.lm.search_model.session, rows)
    candidates = [f"i{n}" for n in range(0, 60, 4)]
    ranked, expected = ours.rank(HISTORIES[1], candidates), reference.rank(HISTORIES[1], candidates)
    assert rows == [1, 1]  # the prompt, then every candidate's tokens: both in ONNX Runtime
    assert [r.item_id for r in ranked] == [r.item_id for r in expected]
    assert [r.score for r in ranked] == pytest.approx([r.score for r in expected], rel=1e-5, abs=1e-4)


def test_export_is_kept_and_made_again_when_broken(tiny_model, tmp_path, monkeypatch):
    fingerprint = model_fingerprint(tiny_model)
    OnnxDecoder.from_model(tiny_model, fingerprint, tmp_path)
    (graph,) = tmp_path.glob(f"onnx/*/{GRAPH_FILE}")
    exports = []
    real_export = onnx_runtime.export_decoder
    monkeypatch.setattr(onnx_runtime, "export_decoder", lambda *a: exports.append(a) or real_export(*a))
    OnnxDecoder.from_model(tiny_model, fingerprint, tmp_path)
    assert exports == []  # kept
    graph.write_bytes(graph.read_bytes()[:1000])  # a truncated file, as a killed copy would leave
    decoder = OnnxDecoder.from_model(tiny_model, fingerprint, tmp_path)
    assert len(exports) == 1 and graph.stat().st_size > 1000
    assert not list(tmp_path.glob("onnx/.tmp-*"))  # the staging folder is gone
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(decoder(ids, logits_to_keep=1).logits, tiny_model(ids, logits_to_keep=1).logits, atol=1e-4)


def test_refusals(tiny_model, make_rec, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="runtime must be one of torch, transformers, onnxruntime"):
        check_runtime("tensorrt")
    with pytest.raises(ConfigError, match="runtime must be one of"):
        make_rec(catalog_of(["A", "B"]), runtime="onnx")
    with pytest.raises(ConfigError, match="float32 models"):
        OnnxDecoder.from_model(copy.deepcopy(tiny_model).to(torch.bfloat16), "x", tmp_path)  # (a copy: the fixture is shared)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"needs the onnxruntime package: pip install 'genrec\[onnx\]'"):
        make_rec(catalog_of(["A", "B"]), runtime="onnxruntime")


def test_cli_runtime_flag(tmp_path, tiny_model_dir, capsys):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"{n},{t}\n" for n, t in enumerate(random_titles(40, seed=2))))
    argv = ["recommend", "--catalog", str(items), "--model", str(tiny_model_dir), "--history", "1,2", "-k", "4",
            "--search", "beam", "--json"]  # fmt: skip
    lists = []
    for runtime in ("torch", "onnxruntime"):
        assert main([*argv, "--runtime", runtime]) == 0
        lists.append([row["item_id"] for row in json.loads(capsys.readouterr().out)])
    assert lists[0] == lists[1] and len(lists[0]) == 4
