"""Tables of the label-skew grid (bench/label_skew.py) from its cached cells.

Per cell: the final test accuracy, the round-0 (warm start) accuracy, the
worst drop after round 2 (how far a round falls below the best round before
it), and the rounds, bytes and client FLOPs to reach the target, centralized
prompt tuning's accuracy minus 1 point, counted from round 1. Over seeds:
mean ± sample standard deviation; a difference between two methods is given
with the standard deviation of its per-seed (paired) differences.

    python bench/label_skew_report.py [--out runs/label_skew]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.engine.summary import convergence

RECOMMENDED = "balanced-softmax"  # bench/label_skew.py's RECOMMENDED

DROP_AFTER = 2
"""Rounds after this one are checked for a drop below the best before them."""


def worst_drop(accs: Sequence[float]) -> float:
    """max over rounds r > 2 of (best accuracy of rounds 1..r-1) − acc_r."""
    worst = 0.0
    for r in range(DROP_AFTER + 1, len(accs)):
        best = max(accs[1:r])
        worst = max(worst, best - accs[r])
    return worst


def load(out: Path) -> tuple[dict[str, Any], dict[tuple[str, int], Any]]:
    cells = {}
    for path in sorted((out / "cells").glob("*.json")):
        data = json.loads(path.read_text())
        cells[data["cell"]] = data
    refs = {}
    for path in sorted((out / "references").glob("*.json")):
        corpus, seed = path.stem.split("__s")
        refs[(corpus, int(seed))] = json.loads(path.read_text())
    return cells, refs


def cell_metrics(cell: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    history = cell["history"]
    accs = [float(r["test_accuracy"]) for r in history]
    target = ref["centralized"][-1] - 0.01
    conv = convergence(history, target)
    return {
        "final": accs[-1],
        "warm": accs[0],
        "best": max(accs[1:]),
        "drop": worst_drop(accs),
        "rounds": conv.get("rounds"),
        "bytes": conv.get("bytes"),
        "flops": conv.get("client_flops"),
        "target": target,
        "central": ref["centralized"][-1],
        "probe": ref["linear_probe"],
    }


def mean_sd(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "—"
    sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return f"{100 * v.mean():.1f} ± {100 * sd:.1f}"


def rounds_text(values: Sequence[int | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return f"never (0/{len(values)})"
    return f"{np.mean(reached):.1f} ({len(reached)}/{len(values)} seeds)"


def group(
    cells: dict[str, Any], refs: dict[tuple[str, int], Any]
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Cell metrics grouped by everything but the seed."""
    out: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for key, cell in cells.items():
        corpus, partition, algorithm, start, seed = key.split("/")
        if "error" in cell:
            out[(corpus, partition, algorithm, start)].append({"error": cell["error"]})
            continue
        ref = refs.get((corpus, int(seed[1:])))
        if ref is None:
            continue
        metrics = cell_metrics(cell, ref)
        metrics["seed"] = int(seed[1:])
        out[(corpus, partition, algorithm, start)].append(metrics)
    return out


def table(
    groups: dict[tuple[str, ...], list[dict[str, Any]]],
    keep: Any,
) -> list[str]:
    lines = [
        "| corpus | partition | algorithm | start | seeds | final acc | warm start "
        "| worst drop after r2 | rounds to central−1pt | centralized | linear probe |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (corpus, partition, algorithm, start), rows in sorted(groups.items()):
        if not keep(corpus, partition, algorithm, start):
            continue
        if rows and "error" in rows[0]:
            lines.append(
                f"| {corpus} | {partition} | {algorithm} | {start} | 0 | cannot build "
                "the clients (see note) | | | | | |"
            )
            continue
        lines.append(
            f"| {corpus} | {partition} | {algorithm} | {start} | {len(rows)} "
            f"| {mean_sd([r['final'] for r in rows])} "
            f"| {mean_sd([r['warm'] for r in rows])} "
            f"| {100 * max(r['drop'] for r in rows):.1f} "
            f"| {rounds_text([r['rounds'] for r in rows])} "
            f"| {mean_sd([r['central'] for r in rows])} "
            f"| {mean_sd([r['probe'] for r in rows])} |"
        )
    return lines


def paired(
    groups: dict[tuple[str, ...], list[dict[str, Any]]],
    a: tuple[str, ...],
    b: tuple[str, ...],
    metric: str = "final",
) -> str:
    """mean ± sd of b − a over the seeds both have."""
    ra = {r["seed"]: r[metric] for r in groups.get(a, []) if "seed" in r}
    rb = {r["seed"]: r[metric] for r in groups.get(b, []) if "seed" in r}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return "—"
    diff = [rb[s] - ra[s] for s in seeds]
    return mean_sd(diff) + f" (n={len(seeds)})"


def report(out: Path) -> str:
    cells, refs = load(out)
    groups = group(cells, refs)
    seconds = sum(c.get("seconds", 0.0) for c in cells.values())
    lines = [
        f"{len(cells)} cells finished ({seconds / 3600:.2f} h of cell time), "
        f"{len(refs)} (corpus, seed) references.",
        "",
        "### Dir(0.1), equal client sizes: every algorithm",
        "",
    ]
    lines += table(
        groups,
        lambda c, p, a, s: (
            p == "dirichlet-balanced-a0.1"
            and s != "cold"
            and (s in ("class-means", "lda") or a == "fedavg")
        ),
    )
    lines += ["", "### Differences to FedAvg (class-means start), per-seed pairs", ""]
    lines += ["| corpus | algorithm | Δ final acc (points) |", "|---|---|---|"]
    for corpus in sorted({k[0] for k in groups}):
        base = (corpus, "dirichlet-balanced-a0.1", "fedavg", "class-means")
        for algo in sorted({k[2] for k in groups if k[0] == corpus}):
            if algo == "fedavg":
                continue
            key = (corpus, "dirichlet-balanced-a0.1", algo, "class-means")
            lines.append(f"| {corpus} | {algo} | {paired(groups, base, key)} |")
    lines += ["", "### The lda warm start against class-means, per-seed pairs", ""]
    lines += [
        "| corpus | algorithm | Δ final acc (points) | Δ warm start (points) |",
        "|---|---|---|---|",
    ]
    for key in sorted(groups):
        corpus, partition, algo, start = key
        base = (corpus, partition, RECOMMENDED, "class-means")
        if start != "lda" or base not in groups:
            continue
        lines.append(
            f"| {corpus} | {algo} | {paired(groups, base, key)} "
            f"| {paired(groups, base, key, 'warm')} |"
        )
    lines += ["", "### Dynamic vs FedAvg by start", ""]
    lines += [
        "| corpus | partition | start | FedAvg final | Dynamic final | Δ final "
        "| FedAvg rounds to target | Dynamic rounds to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        corpus, partition, algo, start = key
        if algo != "fedavg":
            continue
        dyn = (corpus, partition, "dynamic", start)
        if dyn not in groups:
            continue
        fa, dy = groups[key], groups[dyn]
        lines.append(
            f"| {corpus} | {partition} | {start} | {mean_sd([r['final'] for r in fa])} "
            f"| {mean_sd([r['final'] for r in dy])} | {paired(groups, key, dyn)} "
            f"| {rounds_text([r['rounds'] for r in fa])} "
            f"| {rounds_text([r['rounds'] for r in dy])} |"
        )
    lines += [
        "",
        "### Partitions: FedAvg, Dynamic and the recommended configuration",
        "",
    ]
    lines += table(
        groups,
        lambda c, p, a, s: (
            a in ("fedavg", "dynamic", RECOMMENDED) and s == "class-means"
        ),
    )
    text = "\n".join(lines)
    results = Path("bench/results")
    results.mkdir(parents=True, exist_ok=True)
    # One file per cache directory: a partial cache must not overwrite the
    # tables of another (runs/label_skew -> label_skew.json).
    (results / f"{out.name}.json").write_text(
        json.dumps(
            {"/".join(k): v for k, v in sorted(groups.items())}, indent=1, default=str
        )
    )
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/label_skew"))
    report(parser.parse_args().out)


if __name__ == "__main__":
    main()
