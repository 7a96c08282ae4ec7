from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.errors import IndexCacheError
from genrec.decoding import (
    TitleContext,
    TitleIndex,
    build_index,
    load_or_build_index,
    split_prompt_context,
    tokenize_titles,
)

END = 2


def pad(seqs):
    width = max((len(s) for s in seqs), default=1)
    out = np.full((len(seqs), width), -1, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def dict_trie(seqs):
    """The reference: GENRE's nested-dict trie."""
    root: dict = {}
    for n, seq in enumerate(seqs):
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
        node.setdefault(None, []).append(n)
    return root


def check_against_reference(seqs, index: TitleIndex):
    ref = dict_trie(seqs)

    def visit(ref_node, node, path):
        allowed = sorted(k for k in ref_node if k is not None)
        assert index.allowed(node).tolist() == allowed, path
        assert sorted(index.titles_at(node)) == sorted(ref_node.get(None, [])), path
        assert index.leaves_below[node] == count(ref_node)
        for tok in allowed:
            child = index.child(node, tok)
            assert child > 0
            visit(ref_node[tok], child, path + [tok])

    def count(ref_node):
        return len(ref_node.get(None, [])) + sum(count(v) for k, v in ref_node.items() if k is not None)

    visit(ref, 0, [])
    for n, seq in enumerate(seqs):
        assert index.sequence(n) == list(seq)


sequences = st.lists(
    st.lists(st.integers(min_value=3, max_value=12), min_size=0, max_size=6).map(lambda s: s + [END]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(sequences)
def test_flat_trie_matches_dict_trie(seqs):
    index = build_index(pad(seqs), vocab_size=16)
    check_against_reference(seqs, index)
    # keys are sorted: the binary-search lookup depends on it
    assert np.all(np.diff(index.keys) > 0)


@settings(max_examples=100, deadline=None)
@given(sequences, st.data())
def test_dead_nodes_exclude_exactly_the_banned_titles(seqs, data):
    index = build_index(pad(seqs), vocab_size=16)
    banned = data.draw(st.sets(st.integers(min_value=0, max_value=len(seqs) - 1)))
    dead = set(index.dead_nodes(banned).tolist())

    # every title reachable without entering a dead node, found by walking the trie
    reachable: set[int] = set()
    stack = [0]
    while stack:
        node = stack.pop()
        reachable.update(index.titles_at(node))
        for tok in index.allowed(node).tolist():
            child = index.child(node, tok)
            if child not in dead:
                stack.append(child)
    identical = {n for n in range(len(seqs)) for m in range(len(seqs)) if seqs[n] == seqs[m] and m not in banned}
    expected = {n for n in range(len(seqs)) if n not in banned} | identical
    assert reachable == expected


def test_prefix_titles_and_sentinel():
    seqs = [[5, 6, END], [5, 6, 7, END], [9, END]]  # "Heat" / "Heat 2"
    index = build_index(pad(seqs), vocab_size=16)
    heat = index.walk([5, 6])
    assert index.allowed(heat).tolist() == [END, 7]
    assert index.titles_at(index.walk([5, 6, END])) == [0]
    assert index.n_children[index.sentinel] == 0
    assert index.walk([4]) == -1


def test_keep_columns_is_keep_restricted_to_the_title_tokens():
    import torch

    from genrec.decoding.constraint import TitleConstraint

    seqs = [[5, 6, END], [5, 6, 7, END], [9, END]]
    constraint = TitleConstraint(build_index(pad(seqs), vocab_size=16), "cpu")
    assert constraint.arrays["columns"].tolist() == [END, 5, 6, 7, 9]
    logp = torch.randn(3, 16)
    nodes = torch.tensor([0, constraint.index.walk([5, 6]), constraint.sentinel])
    row, token, _ = constraint.allowed(nodes)
    full = constraint.keep(logp, row, token)
    compact = constraint.keep_columns(logp, row, token, logp[row, token])
    assert torch.equal(full[:, constraint.arrays["columns"]], compact)  # the same entries, and -inf elsewhere
    assert torch.isinf(full).sum() - torch.isinf(compact).sum() == 3 * (16 - 5)


def test_empty_index():
    index = build_index(np.zeros((0, 1), dtype=np.int32), vocab_size=16)
    assert index.n_titles == 0 and index.max_depth == 0 and index.allowed(0).tolist() == []


def test_save_load_and_corruption(tmp_path):
    index = build_index(pad([[5, 6, END], [7, END]]), vocab_size=16, meta={"x": 1})
    path = tmp_path / "i.npz"
    index.save(path)
    again = TitleIndex.load(path)
    assert again.checksum() == index.checksum() and again.meta["x"] == 1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCacheError, match="unreadable"):
        TitleIndex.load(path)


def test_tampered_array_fails_checksum(tmp_path):
    index = build_index(pad([[5, 6, END], [7, END]]), vocab_size=16)
    path = tmp_path / "i.npz"
    index.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["token"] = arrays["token"].copy()
    arrays["token"][1] = 8
    np.savez(path, **arrays)
    with pytest.raises(IndexCacheError, match="checksum"):
        TitleIndex.load(path)


def test_split_prompt_context_moves_trailing_space():
    text, ctx = split_prompt_context("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nTitle: ", ["<|im_start|>", "<|im_end|>"], [2])
    assert text.endswith("Title:")
    assert ctx.context == "\nTitle:" and ctx.title_prefix == " "
    text, ctx = split_prompt_context("line one\nAnswer:\n", [], (), "\n")
    assert ctx.context == "\n" and ctx.end_text == "\n"


def test_titles_tokenised_in_context_match_the_prompt_boundary(tokenizer):
    """The classic failure: a title's first token must be the one the model writes right after
    the prompt, not the token of the title tokenised alone."""
    titles = ["The Matrix", "Alien", " leading space", "12 Angry Men", "Amélie", "<|im_end|> is text"]
    ctx = TitleContext(context="assistant\n", title_prefix="", end_ids=(tokenizer.eos_token_id,))
    seqs, fallbacks = tokenize_titles(tokenizer, titles, ctx)
    assert fallbacks == 0
    prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for title, row in zip(titles, seqs):
        ids = [t for t in row.tolist() if t >= 0]
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[:-1]
        assert tokenizer.decode(ids[:-1]) == title
        if "<|" not in title:
            # prompt tokens + title tokens == the tokens of prompt and title written together
            whole = tokenizer("<|im_start|>assistant\n" + title, add_special_tokens=False)["input_ids"]
            assert prompt + ids[:-1] == whole


def test_space_prefix_context(tokenizer):
    ctx = TitleContext(context="assistant\nTitle:", title_prefix=" ", end_ids=(2,))
    seqs, _ = tokenize_titles(tokenizer, ["Heat"], ctx)
    ids = [t for t in seqs[0].tolist() if t >= 0]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "ĠHeat"  # the space belongs to the title's token


def test_index_cache_roundtrip_and_rebuild(tokenizer, tmp_path, caplog):
    ctx = TitleContext(context="assistant\n", title_prefix="", end_ids=(2,))
    titles = ["Alien", "Aliens", "Heat", "Heat 2"]
    first = load_or_build_index(titles, tokenizer, ctx, catalog_hash="h", cache_dir=tmp_path)
    files = list((tmp_path / "indexes").glob("*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    again = load_or_build_index(titles, tokenizer, ctx, catalog_hash="h", cache_dir=tmp_path)
    assert "rebuilding" in caplog.text
    assert again.checksum() == first.checksum()
    assert TitleIndex.load(files[0]).checksum() == first.checksum()  # the rebuilt file is sound
