"""Paired comparisons: the difference, its interval and p-value, and refusing unpaired results."""

import random
import subprocess
import sys

import numpy as np
import pytest

from genrec.errors import DataError
from genrec.evaluation import paired_comparison
from genrec.evaluation.results_io import append_results as _append
from genrec.ranking.metrics import UserResult, ndcg
from genrec.evaluation.significance import metric_values

from conftest import REPO


def _results(ranks: list[int | None]) -> list[UserResult]:
    return [UserResult(f"u{i}", f"t{i}", [], rank=r, n_outputs=10, row=i) for i, r in enumerate(ranks)]


def _random_ranks(rng: random.Random, n: int) -> list[int | None]:
    return [rng.choice([None, None, None, 1, 2, 5, 12]) for _ in range(n)]


def test_the_difference_is_the_difference_of_the_means_and_swaps_sign():
    rng = random.Random(0)
    a, b = _results(_random_ranks(rng, 200)), _results(_random_ranks(rng, 200))
    ab, ba = paired_comparison(a, b, names=("a", "b")), paired_comparison(b, a, names=("b", "a"))
    expected = np.mean([ndcg(r.rank, 10) for r in a]) - np.mean([ndcg(r.rank, 10) for r in b])
    assert ab.difference == pytest.approx(expected) and ba.difference == pytest.approx(-expected)
    assert ab.mean - ab.against_mean == pytest.approx(expected) and (ba.mean, ba.against_mean) == (ab.against_mean, ab.mean)
    assert (ab.better, ab.worse, ab.tied) == (ba.worse, ba.better, ba.tied) and ab.better + ab.worse + ab.tied == 200
    assert ab.ci_low <= ab.difference <= ab.ci_high
    assert ab.p_value == pytest.approx(ba.p_value)  # two-sided
    # rows are paired by their number, not by list position
    assert paired_comparison(a[::-1], b, names=("a", "b")) == ab


def test_no_difference_is_not_significant_and_a_clear_one_is():
    same = _results([1, None, 3, None, 2] * 20)
    tie = paired_comparison(same, same)
    assert tie.difference == 0 and (tie.ci_low, tie.ci_high) == (0, 0) and tie.p_value == 1.0 and not tie.significant
    better = paired_comparison(_results([1] * 60 + [None] * 40), _results([None] * 100), resamples=500)
    assert better.significant and better.ci_low > 0 and better.p_value == pytest.approx(1 / 501) and better.p_text == "0.002"
    clearer = paired_comparison(_results([1] * 60 + [None] * 40), _results([None] * 100), resamples=2000)
    assert clearer.p_text == "< 0.001" and "p < 0.001" in clearer.describe() and "p = 1.000" in tie.describe()
    assert "significant" in better.describe() and better.to_dict()["significant"] is True


def test_a_small_noisy_gain_is_reported_as_noise():
    # 3 rows better and 2 worse out of 100: the interval straddles zero
    a = _results([1, 1, 1, None, None] + [None] * 95)
    b = _results([None, None, None, 1, 1] + [None] * 95)
    c = paired_comparison(a, b)
    assert c.difference == pytest.approx(0.01) and c.ci_low < 0 < c.ci_high and c.p_value > 0.3 and not c.significant


def test_an_interval_clear_of_zero_with_a_randomisation_p_above_005_is_noise():
    # 7 rows worse and 1 better of 100: the bootstrap interval excludes zero, the sign flips say p = 0.06
    a = _results([1] + [None] * 99)
    b = _results([None] + [1] * 7 + [None] * 92)
    c = paired_comparison(a, b)
    assert c.ci_high < 0 and 0.05 < c.p_value < 0.1 and not c.significant and "not significant" in c.describe()


def test_bootstrap_interval_matches_a_plain_reference():
    rng = random.Random(1)
    a, b = _results(_random_ranks(rng, 150)), _results(_random_ranks(rng, 150))
    c = paired_comparison(a, b, resamples=4000, seed=5)
    diff = metric_values(a, "NDCG@10") - metric_values(b, "NDCG@10")
    # an independent bootstrap with Python's own generator agrees to Monte Carlo error
    pick = random.Random(9)
    means = sorted(sum(diff[pick.randrange(150)] for _ in range(150)) / 150 for _ in range(4000))
    assert c.ci_low == pytest.approx(means[100], abs=0.006) and c.ci_high == pytest.approx(means[3899], abs=0.006)


def test_rows_counted_several_times_are_one_piece_of_evidence_when_clustered():
    from dataclasses import replace

    rng = random.Random(3)
    a, b = _results(_random_ranks(rng, 120)), _results(_random_ranks(rng, 120))
    once = paired_comparison(a, b, resamples=1000)
    # every cluster a single row: the same comparison as without clusters
    single = paired_comparison(a, b, resamples=1000, clusters=[r.row for r in a])
    assert replace(single, clusters=None) == once and single.clusters == 120
    # each row pooled ten times over (the same user and target in ten seeded runs)
    copies = 10
    a10 = [replace(r, row=r.row + 120 * c) for c in range(copies) for r in a]
    b10 = [replace(r, row=r.row + 120 * c) for c in range(copies) for r in b]
    naive = paired_comparison(a10, b10, resamples=1000)
    clustered = paired_comparison(a10, b10, resamples=1000, clusters=[(r.user_id, r.target) for r in a10])
    assert naive.difference == pytest.approx(once.difference) == pytest.approx(clustered.difference)
    assert naive.ci_high - naive.ci_low < 0.5 * (once.ci_high - once.ci_low)  # ten copies looked like evidence
    # clustered, the interval and p-value are those of the rows counted once
    assert (clustered.ci_low, clustered.ci_high) == pytest.approx((once.ci_low, once.ci_high))
    assert clustered.p_value == once.p_value and clustered.rows == 1200 and clustered.clusters == 120
    with pytest.raises(DataError, match="2 cluster keys for 120 results"):
        paired_comparison(a, b, clusters=[0, 1])


def test_metrics_at_any_cut_off():
    r = _results([1, 4, 11, None])
    assert metric_values(r, "HR@10").tolist() == [1, 1, 0, 0]
    assert metric_values(r, "mrr@5").tolist() == [1, 0.25, 0, 0]
    with pytest.raises(DataError, match="unknown metric 'AUC'"):
        metric_values(r, "AUC")


def test_unpaired_results_are_refused_naming_the_row():
    a = _results([1, None, 2])
    with pytest.raises(DataError, match="row 2 is in one only"):
        paired_comparison(a, a[:2])
    other = _results([1, None, 2])
    other[1].target = "elsewhere"
    with pytest.raises(DataError, match="row 1 is user u1 -> t1 in method but user u1 -> elsewhere"):
        paired_comparison(a, other)
    with pytest.raises(DataError, match="same row twice"):
        paired_comparison(a + a[:1], a)
    with pytest.raises(DataError, match="no results"):
        paired_comparison([], a)


def test_compare_cli(tmp_path):
    for run, ranks in (("one", [1, None, 2, None]), ("two", [None, None, 2, 3])):
        (tmp_path / run / "users").mkdir(parents=True)
        _append(tmp_path / run / "users" / "genrec.jsonl", _results(ranks))
    cmd = [sys.executable, str(REPO / "eval" / "compare.py"), f"{tmp_path / 'one'}:genrec", f"{tmp_path / 'two'}:genrec"]
    done = subprocess.run([*cmd, "--metrics", "HR@1,HR@10"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| HR@1 | 4 | 0.2500 | 0.0000 | +0.2500 |" in done.stdout and "| 1 / 0 |" in done.stdout
    missing = subprocess.run([*cmd[:2], f"{tmp_path / 'one'}:pop", cmd[3]], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "no results for 'pop'" in missing.stderr and "it has: genrec" in missing.stderr


def test_compare_reports_how_alike_the_two_lists_are(tmp_path):
    lists = {"one": [["a", "b"], ["c", "d"], ["e", "f"]], "two": [["a", "b"], ["d", "c"], ["e", "x"]]}
    for run, items in lists.items():
        (tmp_path / run / "users").mkdir(parents=True)
        results = [UserResult(f"u{i}", f"t{i}", row_items, rank=None, n_outputs=2, row=i) for i, row_items in enumerate(items)]
        _append(tmp_path / run / "users" / "genrec.jsonl", results)
    cmd = [sys.executable, str(REPO / "eval" / "compare.py"), f"{tmp_path / 'one'}:genrec", f"{tmp_path / 'two'}:genrec", "--overlap", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "top-2 overlap: 0.833 on average; the same top-2 on 1 of 3 rows" in done.stdout  # (1 + 1 + 0.5) / 3


def test_compare_pairs_rows_by_user_across_runs_that_numbered_them_apart(tmp_path):
    """A --only new run against the same rows of an all-rows run: paired by user and target; a
    user and target held twice is left out, not guessed at."""
    from dataclasses import replace

    every = _results([1, None, 2, None, 3]) + [UserResult("u1", "t1", [], rank=1, n_outputs=10, row=5)]  # u1/t1 twice
    only = [replace(r, row=n) for n, r in enumerate(reversed(_results([None, 4, 2, 1, None])[2:]))]  # rows 4, 3, 2, renumbered
    for run, results in (("all", every), ("new", only)):
        (tmp_path / run / "users").mkdir(parents=True)
        _append(tmp_path / run / "users" / "m.jsonl", results)
    cmd = [sys.executable, str(REPO / "eval" / "compare.py"), f"{tmp_path / 'new'}:m", f"{tmp_path / 'all'}:m", "--metrics", "HR@1"]
    done = subprocess.run([*cmd, "--by-user"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # u2 (2 against 2), u3 (1 against none), u4 (none against 3): HR@1 1/3 against 0
    assert "3 rows paired by user and target (0 whose" in done.stdout and "| HR@1 | 3 | 0.3333 | 0.0000 |" in done.stdout


def test_compare_pools_pairs_of_runs_into_one_test(tmp_path):
    for run, ranks in (("a1", [1, None]), ("b1", [None, None]), ("a2", [1, 2, None]), ("b2", [None, 2, None])):
        (tmp_path / run / "users").mkdir(parents=True)
        _append(tmp_path / run / "users" / "m.jsonl", _results(ranks))
    side = lambda run: f"{tmp_path / run}:m"  # noqa: E731
    cmd = [sys.executable, str(REPO / "eval" / "compare.py"), side("a1"), side("b1"), "--and", side("a2"), side("b2"), "--metrics", "HR@1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| HR@1 | 5 | 0.4000 | 0.0000 | +0.4000 |" in done.stdout and "| 2 / 0 |" in done.stdout
    apart = subprocess.run([*cmd[:4], "--and", side("a2"), side("b1")], capture_output=True, text=True, timeout=300)
    assert apart.returncode == 1 and "hold different rows" in apart.stderr
    # --cluster: which dataset a run read says which rows are the same row (u0 -> t0 and u1 -> t1 are in both runs)
    unknown = subprocess.run([*cmd, "--cluster"], capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 1 and "no run_config.json, so --cluster cannot tell" in unknown.stderr
    for run in ("a1", "a2"):
        (tmp_path / run / "run_config.json").write_text('{"dataset": "toy", "data": {"data_dir": "x"}}', encoding="utf-8")
    clustered = subprocess.run([*cmd, "--cluster"], capture_output=True, text=True, timeout=300)
    assert clustered.returncode == 0, clustered.stderr
    assert "3 clusters (distinct dataset, user and target) among 5 rows" in clustered.stdout
    assert "| HR@1 | 5 | 0.4000 | 0.0000 | +0.4000 |" in clustered.stdout
