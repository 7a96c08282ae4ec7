"""Does a wider beam find titles the model scores higher? Two eval/run.py folders of one model and
dataset, decoded with different beam widths: each row's two lists are scored exactly by the model
(``score_titles``, the prompt the beam decodes from) and compared.

    .venv/bin/python eval/search_error.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k \
        --model runs/ml-fzall-kd8 runs/ml-fzall-kd8-eval runs/ml-fzall-kd8-b20 --rows 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genrec import Recommender
from genrec.data.arguments import add_dataset_arguments, dataset_from_args
from genrec.evaluation import load_results
from genrec.data.splits import split_dataset
from genrec.tasks.rank import score_titles


def _lists(run: Path) -> tuple[dict[int, list[str]], dict]:
    config = json.loads((run / "run_config.json").read_text(encoding="utf-8"))
    return {r.row: r.items for r in load_results(run, "genrec")}, config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("narrow", type=Path, help="eval/run.py folder decoded with the narrower beam")
    p.add_argument("wide", type=Path, help="the same model and rows, a wider beam")
    add_dataset_arguments(p)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=200, help="the first N test rows")
    args = p.parse_args()
    (narrow, config), (wide, wide_config) = _lists(args.narrow), _lists(args.wide)
    for key in ("dataset", "model", "users", "seed", "tie_break", "max_history", "template"):
        if config.get(key) != wide_config.get(key):
            raise SystemExit(f"the two runs differ in {key}: {config.get(key)!r} against {wide_config.get(key)!r}")
    if config.get("users") is not None:
        raise SystemExit("use runs over all users (row numbers of a sample are not test-row numbers)")
    if len(config.get("history_grid") or ()) > 1:
        raise SystemExit("use runs with one history length (a tuned length is not the prompt scored here)")
    forms = {(c.get("data") or {}).get("title_years", "always") for c in (config, wide_config)}
    if forms != {args.title_years}:
        raise SystemExit(f"the runs' titles were --title-years {' / '.join(sorted(forms))}, not {args.title_years}")
    dataset, _ = dataset_from_args(args)
    test = split_dataset(dataset, tie_break=config["tie_break"], seed=config["seed"]).test
    rec = Recommender(dataset.catalog, model=args.model, search="beam")
    rows = [r for r in sorted(narrow) if r in wide][: args.rows]
    gains, higher, new, new_above = [], 0, 0, 0
    for row in tqdm(rows, unit="row"):
        items = list(dict.fromkeys(narrow[row] + wide[row]))
        history = list(test[row].history)[-config["max_history"] :]
        score = dict(zip(items, score_titles(rec, history, items, template=config["template"], k=config["k"])))
        a, b = [score[i] for i in narrow[row]], [score[i] for i in wide[row]]
        gains.append(sum(b) - sum(a))
        higher += sum(b) > sum(a) + 1e-6
        for item in set(wide[row]) - set(narrow[row]):
            new += 1
            new_above += score[item] > min(a) + 1e-6
    print(f"{len(rows)} rows: the wide list's total log-probability is higher on {higher} "
          f"(mean {np.mean(gains):+.2f} nats per list); titles only the wide list holds: {new}, "
          f"of which {new_above} score above the narrow list's last title")


if __name__ == "__main__":
    main()
