"""The benchmark's conclusions in words and as a flat table, generated from the verdicts.

Nothing here is written by hand: every sentence comes from ``tests.csv`` (the paired
comparisons on the primary metric, ``benchmark.test_metric``, Holm-corrected over the
models). Only that metric carries a verdict; the other metric columns of the report are
descriptive, and the summary says so.

- `comparisons_frame`: ``comparisons.csv`` of the report (model, baseline, metric, n_users,
  mean_diff, ci_low, ci_high, p, p_holm, mdd, verdict), for automated runs and reviewers;
- `summary_lines`: one sentence per comparison (difference, interval, decision), then what
  the run cannot tell and why;
- ``python -m harness.report.verdicts REPORT_DIR [--readme README.md]`` prints the summary
  of a written report, or replaces the README's block between the markers
  ``<!-- verdicts:begin -->`` and ``<!-- verdicts:end -->`` with it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from harness.benchmark.layout import BenchmarkResults

COMPARISON_COLUMNS = [
    "model",
    "baseline",
    "metric",
    "n_users",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "mdd",
    "verdict",
]
BEGIN, END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"


def comparisons_frame(results: BenchmarkResults) -> pd.DataFrame:
    """The paired comparisons as the flat ``comparisons.csv`` table."""
    tests = results.tests
    if tests is None or tests.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    out = tests.rename(columns={"mean_difference": "mean_diff", "p_value": "p"})
    return out[COMPARISON_COLUMNS].reset_index(drop=True)


def _users(results: BenchmarkResults, n_users: int) -> str:
    folds = results.info.get("folds")
    if folds and results.info.get("fold_fingerprints"):
        return f"{n_users} test users pooled over {folds} folds"
    return f"{n_users} test users"


def _seeds(results: BenchmarkResults) -> str:
    n = results.info.get("n_seeds", "?")
    test_seeds = results.info.get("test_seeds")
    fresh = f" {list(test_seeds)}" if test_seeds else ""
    return f"{n} fresh training seeds{fresh} per stochastic model, crossed with the test users"


def _decision(row: pd.Series, margin: float) -> str:
    verdict = str(row["verdict"])
    model, baseline = row["model"], row["baseline"]
    if verdict == "better":
        return f"{model} is better than {baseline}"
    if verdict == "worse":
        return f"{model} is worse than {baseline}"
    if verdict.startswith("equivalent"):
        return f"{model} and {baseline} are equivalent within ±{margin:g}"
    mdd = float(row["mdd"])
    if math.isfinite(mdd) and margin > 0 and mdd > margin:
        return (
            f"not distinguishable: this run detects differences of ±{mdd:.4f} (80% power), "
            f"coarser than the ±{margin:g} margin, so it can show neither a difference nor "
            "equivalence"
        )
    return (
        f"not distinguishable: no difference of ±{mdd:.4f} or more was found (80% power), "
        f"but equivalence within ±{margin:g} was not shown either (two one-sided tests)"
    )


def summary_lines(results: BenchmarkResults) -> list[str]:
    """The report's opening summary, one Markdown bullet per line."""
    tests = comparisons_frame(results)
    info = results.info
    settings = info.get("settings", {})
    metric = info.get("test_metric", "ndcg@100")
    baseline = info.get("baseline", "?")
    margin = float(settings.get("margin", 0.01))
    confidence = float(settings.get("confidence", 0.95))
    if tests.empty:
        return [f"- No comparison: the baseline {baseline} is not among the benchmarked models."]
    n_users = int(tests["n_users"].max())
    lines = [
        f"- Primary metric {metric}, every model against {baseline} on the same "
        f"{_users(results, n_users)} with {_seeds(results)}; {confidence:.0%} intervals, "
        f"p-values Holm-corrected over the {len(tests)} comparisons, equivalence by two "
        f"one-sided tests within ±{margin:g} at the same level."
    ]
    for _, row in tests.iterrows():
        lines.append(
            f"- {row['model']} − {row['baseline']}: {float(row['mean_diff']):+.4f} "
            f"[{float(row['ci_low']):+.4f}, {float(row['ci_high']):+.4f}], "
            f"p_Holm = {_p(row['p_holm'])}: {_decision(row, margin)}."
        )
    unknown = tests[~tests["verdict"].astype(str).str.match(r"(better|worse|equivalent)")]
    if len(unknown):
        worst = float(unknown["mdd"].max())
        needs = _users_needed(results, list(unknown["model"]), margin)
        lines.append(
            f"- What this run cannot tell: whether {', '.join(map(str, unknown['model']))} "
            f"differ from {baseline} by less than ±{worst:.4f}"
            + (f"; to resolve ±{margin:g}: {needs}" if needs else "")
            + "."
        )
    lines.append(
        f"- The other metrics in the tables are descriptive: only {metric} is tested, so "
        "they carry no verdict."
    )
    planned = _planned(results)
    if planned:
        lines.append(
            "- Planned before the sweep (power preflight): "
            + "; ".join(
                f"{c['model']} vs {c['baseline']} ±{c['mdd']:.4f}" for c in planned["comparisons"]
            )
            + f" detectable with {planned['comparisons'][0]['n_users']} test users "
            f"({planned['comparisons'][0]['source']})."
        )
    return lines


def _planned(results: BenchmarkResults) -> dict | None:
    """The power preflight's plan saved beside the benchmark folder, if any."""
    from harness.benchmark.power import load

    plan = load(results.path.parent / f"{results.path.name}.power.json")
    return plan if plan and plan.get("comparisons") else None


def _users_needed(results: BenchmarkResults, models: list[str], margin: float) -> str:
    """Per unresolved comparison, the test users that would detect ``margin``: the power
    plan (`harness.benchmark.power.plan`) with this run's own per-user values as its pilot
    (the seed variance does not shrink with users: then more seeds are needed)."""
    from harness.benchmark.power import plan
    from harness.benchmark.stats import StatsSettings

    info = results.info
    if margin <= 0 or not (results.path / "per_user").is_dir():
        return ""
    n_seeds = int(info.get("n_seeds") or 1)

    def stochastic(model: str) -> bool:
        return not info["models"].get(model, {}).get("deterministic", False) and n_seeds > 1

    tested = list(results.tests["model"])
    planned = plan(
        models=[info["baseline"], *tested],
        baseline=info["baseline"],
        metric=info.get("test_metric", "ndcg@100"),
        n_users=int(info.get("n_test_users") or 1),
        n_folds=int(info.get("folds") or 1) if info.get("fold_fingerprints") else 1,
        n_seeds=n_seeds,
        stats=StatsSettings(
            confidence=float(info.get("settings", {}).get("confidence", 0.95)), margin=margin
        ),
        power={},
        stochastic=stochastic,
        pilot=results.path,
    )
    return ", ".join(
        f"{p.model}: about {p.users_needed:,} test users"
        if p.users_needed
        else f"{p.model}: more seeds (the training-seed variance alone exceeds the margin)"
        for p in planned
        if p.model in models
    )


def _p(value: object) -> str:
    p = float(value)  # type: ignore[arg-type]
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def summary_markdown(results: BenchmarkResults) -> str:
    """`summary_lines` as one Markdown block."""
    return "\n".join(summary_lines(results)) + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the verdict markers replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block: add the two markers where it goes")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Print a report's generated summary, or write it into a README block."""
    from harness.outputs import write_text

    parser = argparse.ArgumentParser(prog="python -m harness.report.verdicts", description=__doc__)
    parser.add_argument("report", type=Path, help="a report folder (holds comparisons.csv)")
    parser.add_argument("--readme", type=Path, help="replace this file's verdict block")
    args = parser.parse_args(argv)
    path = args.report / "summary.md"
    if not path.exists():
        print(f"{path} does not exist: build the report first (harness-report)", file=sys.stderr)
        return 2
    block = path.read_text()
    if args.readme is None:
        print(block, end="")
        return 0
    write_text(args.readme, replace_block(args.readme.read_text(), block))
    print(f"updated the verdict block of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
