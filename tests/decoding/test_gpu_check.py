"""The GPU check (eval/gpu_check.py) runs end to end here on the CPU with a tiny model, so it is
ready when a GPU is lent."""

from __future__ import annotations

import json

from conftest import REPO
from helpers import script_main


def test_gpu_check_runs_on_the_cpu_with_a_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "check"
    code = script_main(REPO / "eval" / "gpu_check.py", [
        "--out", str(out), "--device", "cpu", "--dtype", "float32", "--model", str(tiny_model_dir), "--shapes", "tiny",
        "--batches", "1,3", "--users", "3",
    ])  # fmt: skip
    report = json.loads((out / "gpu_check.json").read_text())
    assert code == 0 and report["genrec_batch"]["returncode"] == 0, report["genrec_batch"]["stderr_tail"]
    assert set(report["models"]) == {"default", "tiny"}
    for model in report["models"].values():
        assert [row["batch"] for row in model["throughput"]] == [1, 3] and all(row["users_per_s"] > 0 for row in model["throughput"])
    # the same device and precision as the reference: the same lists
    assert report["same_top10_as_cpu_fp32"] == {"users": 3, "identical_lists": 3, "mean_top10_overlap": 1.0}
    assert len((out / "histories.csv").read_text().splitlines()) == 1 + 3 * 10
