r"""The peer ratios of ``bench_losses`` at two revisions, measured in turn on one machine.

A change to a loss must not make its ratio to the peer worse. Two full runs of
``bench_losses`` hours apart differ by more than that rule allows (the machine, and glibc's
heap, are not the same), so this script measures both revisions in the same session: each
round runs the benchmark of the base revision and of the working tree in turn, each in its own
process, in the same environment, alternating which goes first; a row's ratio is its median
over the rounds, and *change* is the working tree's ratio over the base's (above 1 is worse).

    python -m benchmarks.compare_revisions --base f5a86f4 --rounds 3 --threads 1 \
        --losses cross_entropy dice_ce kl_div

The base revision is exported with ``git archive`` into a temporary folder and imported from
there (``PYTHONPATH``), with this environment's packages. Its benchmark is
``benchmarks/bench_losses.py``, or ``scripts/bench_losses.py`` where it has no
``benchmarks/`` folder. Rows are matched by loss, size and peer; rows only one side has are
left out. The table goes to ``bench_results/compare_revisions.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from benchmarks.benchkit import write_results

REPO = Path(__file__).resolve().parent.parent
#: a row is worse when its ratio grew by more than this factor
WORSE_ABOVE = 1.05

KINDS = ("time", "memory")

Key = tuple[str, str, str]


def export(revision: str, folder: Path) -> Path:
    """Write the files of ``revision`` into ``folder``; return it."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def bench_command(tree: Path) -> list[str]:
    """How ``tree`` runs its loss benchmark."""
    if (tree / "benchmarks" / "bench_losses.py").exists():
        return [sys.executable, "-m", "benchmarks.bench_losses"]
    return [sys.executable, str(tree / "scripts" / "bench_losses.py")]


def run_bench(tree: Path, out: Path, options: list[str]) -> dict[Key, dict[str, float]]:
    """Run ``tree``'s benchmark with ``options``; its rows' ratios by loss, size and peer."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    where = subprocess.run(
        [sys.executable, "-c", "import lossplug; print(lossplug.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imports lossplug from {where}, not from the tree")
    command = [*bench_command(tree), *options, "--out", str(out)]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = json.loads((out / "bench_losses.json").read_text())["rows"]
    return {
        (row["loss"], row["size"], row["peer"]): {
            "time": row["time_ratio"],
            "memory": row["memory_ratio"],
        }
        for row in rows
        if row.get("time_ratio") is not None
    }


def medians(runs: list[dict[Key, dict[str, float]]]) -> dict[Key, dict[str, float]]:
    """Each row's median time and memory ratio over the runs that have it."""
    keys = set.intersection(*(set(run) for run in runs))
    return {
        key: {kind: statistics.median(run[key][kind] for run in runs) for kind in KINDS}
        for key in keys
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each revision")
    parser.add_argument("--losses", nargs="+", metavar="NAME", help="only these losses")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure both revisions in turn and write the comparison; 1 if a row got worse."""
    args = parse_args(argv)
    options = ["--losses", *args.losses] if args.losses else []
    options += ["--threads", str(args.threads)] if args.threads else []
    options += ["--quick"] if args.quick else []
    runs: dict[str, list[dict[Key, dict[str, float]]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"base": export(args.base, Path(scratch) / "base"), "new": REPO}
        for round_number in range(args.rounds):
            order = ["base", "new"] if round_number % 2 == 0 else ["new", "base"]
            for side in order:
                out = Path(scratch) / f"{side}-{round_number}"
                runs[side].append(run_bench(trees[side], out, options))
                print(f"round {round_number + 1}/{args.rounds}: {side} done", flush=True)
    base, new = medians(runs["base"]), medians(runs["new"])
    results = []
    for key in sorted(set(base) & set(new)):
        change = {kind: new[key][kind] / base[key][kind] for kind in KINDS}
        results.append(
            {
                "loss": key[0],
                "size": key[1],
                "peer": key[2],
                "base": base[key],
                "new": new[key],
                "change": change,
                "worse": max(change.values()) > WORSE_ABOVE,
            }
        )
    header = ["loss", "size", "peer", "time: base", "new", "change", "memory: base", "new"]
    header += ["change", f"worse than x{WORSE_ABOVE}"]
    table = [
        [
            r["loss"],
            r["size"],
            r["peer"],
            *(f"{r[side][kind]:.2f}" for kind in KINDS for side in ("base", "new", "change")),
            "yes" if r["worse"] else "no",
        ]
        for r in results
    ]
    title = (
        f"Peer ratios (lossplug / peer) at {args.base} (base) and in the working tree (new), "
        f"median of {args.rounds} runs each, measured in turn."
    )
    payload = {"base": args.base, "rounds": args.rounds, "options": options, "rows": results}
    write_results(args.out, "compare_revisions", payload, title, header, table)
    return 1 if any(r["worse"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
