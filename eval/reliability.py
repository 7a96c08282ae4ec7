"""The reliability table: runs the hardening tests (tests/test_hardening.py) with more examples and
prints what they checked, as counts.

    .venv/bin/python eval/reliability.py --scale 3 --out runs/reliability

``--scale N`` multiplies every property test's number of examples (and the real-model thread
calls and SIGKILL trials). Writes ``reliability.json`` (the raw counts and the pytest result) and
``reliability.md`` (the table) into ``--out``. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what was checked, count key, what would be a failure, its key)
ROWS = [
    ("property-test examples, tiny model (random catalogs, histories, k)", "property_tiny_examples", "", None),
    ("property-test examples, real default model", "property_real_examples", "", None),
    ("hostile conversations (chat)", "conversations", "", None),
    ("constrained outputs checked", "constrained_outputs_checked", "outside the catalog", "constrained_outputs_outside_catalog"),
    ("", None, "the same item twice in one list", "duplicate_outputs"),
    ("", None, "a history item returned unasked", "history_items_returned"),
    ("prompts checked: titles literal, chat structure unchanged", "prompts_checked_for_literal_titles", "", None),
    ("k out of range -> LimitError", "limit_errors_for_bad_k", "", None),
    ("unknown history references -> UnknownItemError", "unknown_item_errors", "", None),
    ("catalogs with blank titles -> CatalogError naming the row", "catalog_errors_naming_the_row", "", None),
    ("empty catalogs -> CatalogError", "empty_catalogs_refused", "", None),
    ("template injection payloads tried", "injection_payloads_tried", "escapes (side effect, leak or mutation)", "injection_escapes"),
    ("  blocked with SecurityError", "injection_security_error", "", None),
    ("  failed with TemplateError (missing template, undefined name)", "injection_template_error", "rendered", "injection_rendered"),
    ("calls from 8 threads on one Recommender, tiny model", "tiny_thread_calls", "differ from serial / crash", ("tiny_thread_mismatches", "tiny_thread_crashes")),
    ("calls from 8 threads on one Recommender, real model", "real_thread_calls", "differ from serial / crash", ("real_thread_mismatches", "real_thread_crashes")),
    ("malformed tool calls (random JSON)", "malformed_tool_calls", "not a ToolError or a valid result", "tool_call_failures"),
    ("  answered with a ToolError", "malformed_tool_calls_answered_with_tool_error", "", None),
    ("corrupted caches (title index, converted model)", "corruption_cases", "not detected / results changed", ("corruption_undetected", "corruption_changed")),
    ("SIGKILLs while a checkpoint was being written", "sigkills_during_checkpoint_writes", "", None),
    ("checkpoints found intact after those kills", "checkpoints_intact_after_kill", "", None),
    ("killed runs finished with --resume", "resumed_runs_finished", "", None),
]


def derived(counts: dict[str, int]) -> dict[str, int]:
    out = dict(counts)
    out["corruption_undetected"] = counts.get("corruption_cases", 0) - counts.get("corruption_detected", 0)
    out["corruption_changed"] = counts.get("corruption_cases", 0) - counts.get("corruption_results_unchanged", 0)
    out["tool_call_failures"] = (
        counts.get("malformed_tool_calls", 0)
        - counts.get("malformed_tool_calls_answered_with_tool_error", 0)
        - counts.get("malformed_tool_calls_that_were_valid", 0)
    )
    return out


def table(counts: dict[str, int]) -> str:
    lines = ["| check | count | failure | failures |", "|---|---:|---|---:|"]
    for label, key, failure, failure_keys in ROWS:
        count = f"{counts.get(key, 0):,}" if key else ""
        if failure_keys is None:
            failures = ""
        elif isinstance(failure_keys, tuple):
            failures = " / ".join(str(counts.get(k, 0)) for k in failure_keys)
        else:
            failures = str(counts.get(failure_keys, 0))
        lines.append(f"| {label} | {count} | {failure} | {failures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=3, help="multiply every property test's examples (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/reliability"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    counts_file = args.out / "counts.json"
    counts_file.unlink(missing_ok=True)
    env = {**os.environ, "GENREC_RELIABILITY_OUT": str(counts_file.resolve()), "GENREC_EXAMPLES_SCALE": str(args.scale)}
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_hardening.py")],
        cwd=REPO,
        env=env,
    )
    elapsed = time.time() - started
    if not counts_file.exists():
        print("the tests wrote no counts (did pytest start?)", file=sys.stderr)
        return result.returncode or 1
    counts = derived(json.loads(counts_file.read_text()))
    text = table(counts)
    summary = f"pytest exit status {result.returncode} ({'all passed' if result.returncode == 0 else 'FAILURES'}), scale {args.scale}, {elapsed:.0f} s"
    (args.out / "reliability.json").write_text(
        json.dumps({"counts": counts, "pytest_exit_status": result.returncode, "scale": args.scale, "seconds": round(elapsed)}, indent=2)
    )
    (args.out / "reliability.md").write_text(text + "\n\n" + summary + "\n")
    print()
    print(text)
    print()
    print(summary)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
