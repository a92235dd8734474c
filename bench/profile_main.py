"""Where the main job's time goes, phase by phase (docs/benchmarks.md, "The
main job by phase").

Runs the main job (the default config of ``fedpeft run``, or that config with
``--set`` overrides) in this process through the same ``run_experiment`` the
CLI calls, with timers wrapped around the functions each phase goes through,
and prints every phase's *exclusive* seconds (a nested phase is not counted
again in its parent: ``federated/round 1-N`` is what the round loop spends
outside its clients, evaluation and checkpoint, i.e. selection, screening and
aggregation). Phases are nested paths, e.g. ``federated/round 1-N/clients/
train (batched)``. Import time is measured apart, in fresh interpreters
(median of 3), since this process has imported everything already.

With ``--cli`` it also times the whole ``fedpeft run -q`` in a subprocess:
what the user waits for after install.

    python bench/profile_main.py [--set key=value ...] [--cli]
        [--out runs/profile] [--json bench/results/profile_main.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results_io import write_json


class Phases:
    """Exclusive wall time per nested phase, by wrapping functions in place."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[list[Any]] = []  # [label, seconds spent in children]

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        is_map = isinstance(owner, dict)
        fn = owner[attr] if is_map else getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            path = "/".join([*(frame[0] for frame in self._stack), name])
            self._stack.append([path.rsplit("/", 1)[-1], 0.0])
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                _, children = self._stack.pop()
                self.seconds[path] += elapsed - children
                self.calls[path] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        if is_map:
            owner[attr] = timed
        else:
            setattr(owner, attr, timed)

    def table(self, total: float) -> str:
        lines = [
            "| phase | calls | seconds | share |",
            "|---|---|---|---|",
        ]
        for path, sec in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"| {path} | {self.calls[path]} | {sec:.2f} | {sec / total:.1%} |"
            )
        rest = total - sum(self.seconds.values())
        share = rest / total
        lines.append(f"| (outside the timed phases) | | {rest:.2f} | {share:.1%} |")
        lines.append(f"| **total** | | **{total:.2f}** | 100% |")
        return "\n".join(lines)


def instrument(phases: Phases) -> None:
    """Wrap the main job's phases (every call goes through these names)."""
    import fedpeft.client.algorithm as algorithm
    import fedpeft.client.feature_cache as feature_cache
    import fedpeft.engine.references as references
    import fedpeft.engine.runner as runner
    import fedpeft.experiment as experiment
    from fedpeft.engine.embedded import EmbeddedRuntime
    from fedpeft.engine.loop import RoundLoop
    from fedpeft.engine.simulation import FederatedRun

    w = phases.wrap
    w(runner, "build_experiment", "build experiment")
    w(experiment, "_load_corpus", "load corpus")
    w(experiment, "load_backbone", "load model")
    w(experiment, "tokenize", "tokenize")
    w(experiment, "_partition", "partition")
    w(runner, "write_partition_report", "partition report")
    w(FederatedRun, "__init__", "federated set-up")
    w(FederatedRun, "run", "federated")
    w(RoundLoop, "initial_round", "round 0 (warm start)")
    w(RoundLoop, "run_round", "round 1-N")
    w(RoundLoop, "_evaluate", "evaluate")
    w(RoundLoop, "_persist", "checkpoint + metrics")
    w(EmbeddedRuntime, "run", "clients")
    w(algorithm, "train_clients_batched", "train (batched)")
    w(algorithm, "finish_update", "local validation")
    w(feature_cache, "compute_features", "features (not cached)")
    for name in list(references.BASELINE_RUNS):
        w(references.BASELINE_RUNS, name, f"baseline: {name}")
    w(runner, "summarize", "summary")
    w(runner, "save_adapter", "save adapter")
    w(runner, "_plot", "plots")


def import_seconds(repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter importing the CLI and engine."""
    code = "import fedpeft.cli, fedpeft.engine.runner"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_seconds(overrides: list[str], out: Path) -> float:
    """Wall time of the whole ``fedpeft run -q`` in a subprocess."""
    fedpeft = Path(sys.executable).with_name("fedpeft")
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [str(fedpeft), "run", "-q", *sets, "--set", f"output_dir={out}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--cli", action="store_true", help="also time `fedpeft run -q`")
    p.add_argument("--label", default="", help="a name for this row in --json")
    p.add_argument("--json", type=Path, default=Path("bench/results/profile_main.json"))
    args = p.parse_args()

    imports = import_seconds()
    from fedpeft.config import load_config
    from fedpeft.engine.runner import run_experiment

    phases = Phases()
    instrument(phases)
    with tempfile.TemporaryDirectory(prefix="fedpeft-profile-") as tmp:
        cfg = load_config(None, [*args.overrides, f"output_dir={tmp}"])
        started = time.perf_counter()
        summary = run_experiment(cfg)
        total = time.perf_counter() - started
        cli = cli_seconds(args.overrides, Path(tmp) / "cli") if args.cli else None

    print(f"imports (fresh interpreter, median of 3): {imports:.2f} s")
    print(phases.table(total))
    fed = summary["federated"]
    print(
        f"federated accuracy {fed['final_accuracy']:.4f}; "
        + ", ".join(
            f"{k} {v['test_accuracy']:.4f}" for k, v in summary["baselines"].items()
        )
    )
    if cli is not None:
        print(f"`fedpeft run -q` end to end: {cli:.1f} s")
    row = {
        "label": args.label or "default",
        "overrides": args.overrides,
        "imports_seconds": imports,
        "run_seconds": total,
        "cli_seconds": cli,
        "phases": dict(phases.seconds),
        "calls": dict(phases.calls),
        "final_accuracy": fed["final_accuracy"],
        "baselines": {k: v["test_accuracy"] for k, v in summary["baselines"].items()},
        "torch_threads": __import__("torch").get_num_threads(),
        "environment": summary["environment"],  # CPU model, precision used
    }
    old = json.loads(args.json.read_text()) if args.json.exists() else {}
    old[row["label"]] = row
    write_json(args.json, old)


if __name__ == "__main__":
    main()
