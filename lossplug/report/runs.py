"""TensorBoard runs: the final value of every loss component per run, and their curves.

A run is a folder holding TensorBoard event files (``events.out.tfevents.*``), found
recursively under the given folder. Each run is named by its path relative to that folder (its
Hydra run folder when it has one) and, where the run has ``.hydra/overrides.yaml``, by its
command-line overrides; overrides that every run shares are printed once above the table.

The table has one row per run and one column per selected tag, holding the tag's last logged
value: by default every tag of the stages ``train``, ``val`` and ``test`` (and of variants such
as ``train_step``): the total ``{stage}/loss``, the components ``{stage}/loss/{name}``, the
weights ``{stage}/loss_weight/{name}`` and task metrics such as ``val/acc``. The PNG plot
(matplotlib's Agg canvas, no display needed) has one panel per stage and one line per run and
selected loss tag (total, component or weight) against the global step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    EventAccumulator,
    ScalarEvent,
)

STAGES = ("train", "val", "test")
#: tags of a stage, or of a stage's variant such as ``train_step``.
DEFAULT_TAGS = r"^(train|val|test)(_\w+)?/"
EVENT_FILES = "events.out.tfevents.*"
#: tag kinds in table order; a tag matching none of the patterns is a task metric.
LOSS_KINDS = (
    ("total", re.compile(r"^[^/]+/loss(_step|_epoch)?$")),
    ("component", re.compile(r"^[^/]+/loss/")),
    ("weight", re.compile(r"^[^/]+/loss_weight/")),
)
METRIC = "metric"
LINE_STYLES = ("-", "--", ":", "-.")
PANELS_PER_ROW = 2


class ReportError(Exception):
    """Nothing to report: no runs, or no tag matching the selection."""


@dataclass(frozen=True)
class Run:
    """One TensorBoard run: where it lies, what it is called, what it logged.

    Attributes:
        name: the path of its folder relative to the reported folder.
        overrides: the Hydra command-line overrides of the job that wrote it, if known.
        scalars: every scalar series, by tag, in logging order.
    """

    name: str
    overrides: tuple[str, ...]
    scalars: dict[str, list[ScalarEvent]]


def find_event_dirs(root: Path) -> list[Path]:
    """The folders under ``root`` (itself included) that hold TensorBoard event files."""
    return sorted({path.parent for path in root.rglob(EVENT_FILES)}, key=natural_key)


def natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders ``2`` before ``10`` (Hydra numbers a sweep's jobs)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", path.as_posix())
        if part
    )


def hydra_job(event_dir: Path) -> Path | None:
    """The Hydra job folder (the nearest one holding ``.hydra``) at or above ``event_dir``."""
    folders = (event_dir, *event_dir.parents)
    return next((folder for folder in folders if (folder / ".hydra").is_dir()), None)


def read_overrides(job_dir: Path | None) -> tuple[str, ...]:
    """The command-line overrides a Hydra job saved in ``.hydra/overrides.yaml``, if any."""
    if job_dir is None or not (job_dir / ".hydra" / "overrides.yaml").is_file():
        return ()
    return tuple(yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or ())


def read_scalars(event_dir: Path) -> dict[str, list[ScalarEvent]]:
    """Every scalar series of a run, read in full with TensorBoard's own reader."""
    accumulator = EventAccumulator(str(event_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()[SCALARS]}


def load_runs(root: Path) -> list[Run]:
    """The runs under ``root``, named by their Hydra job folder when it holds only that run.

    The overrides come from the nearest Hydra job folder, which may lie above ``root`` (as
    when ``root`` is the ``tensorboard/version_0`` folder that ``train.py`` prints).

    Raises:
        ReportError: if there are no event files under ``root``.
    """
    base = root.resolve()
    event_dirs = find_event_dirs(base)
    if not event_dirs:
        raise ReportError(f"no TensorBoard event files ({EVENT_FILES}) under {root}")
    jobs = {event_dir: hydra_job(event_dir) for event_dir in event_dirs}
    runs_per_job = Counter(jobs.values())
    runs = []
    for event_dir, job in jobs.items():
        own_job = job is not None and job.is_relative_to(base) and runs_per_job[job] == 1
        name = (job if own_job else event_dir).relative_to(base).as_posix()
        runs.append(
            Run(
                name=base.name if name == "." else name,
                overrides=read_overrides(job),
                scalars=read_scalars(event_dir),
            )
        )
    return runs


def common_overrides(runs: Sequence[Run]) -> tuple[str, ...]:
    """The overrides every run has (all of them for a single run)."""
    return tuple(
        override for override in runs[0].overrides if all(override in run.overrides for run in runs)
    )


def label_runs(runs: Sequence[Run], common: Collection[str]) -> dict[str, Run]:
    """The runs by label: a run's name followed by its overrides that are not ``common``."""
    labelled = {}
    for run in runs:
        own = [override for override in run.overrides if override not in common]
        labelled[f"{run.name} ({' '.join(own)})" if own else run.name] = run
    return labelled


def tag_kind(tag: str) -> str:
    """``"total"``, ``"component"``, ``"weight"`` (of the loss) or ``"metric"``."""
    return next((kind for kind, pattern in LOSS_KINDS if pattern.search(tag)), METRIC)


def tag_order(tag: str) -> tuple[int, str, int, str]:
    """Sort key: stages in training order, then total, components, weights and metrics."""
    stage = tag.partition("/")[0]
    kinds = [kind for kind, _ in LOSS_KINDS] + [METRIC]
    base_stage = stage.partition("_")[0]  # train_step sorts with train
    stage_index = STAGES.index(base_stage) if base_stage in STAGES else len(STAGES)
    return stage_index, stage, kinds.index(tag_kind(tag)), tag


def select_tags(runs: Sequence[Run], pattern: re.Pattern[str]) -> list[str]:
    """The tags of any run that ``pattern`` matches, in :func:`tag_order`.

    Raises:
        ReportError: if no tag matches.
    """
    logged = {tag for run in runs for tag in run.scalars}
    selected = sorted((tag for tag in logged if pattern.search(tag)), key=tag_order)
    if not selected:
        raise ReportError(
            f"no tag matches {pattern.pattern!r}; the runs logged: {', '.join(sorted(logged))}"
        )
    return selected


def final_values_table(
    runs: Mapping[str, Run], tags: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """The header and one row per labelled run: each tag's last value (``-`` if not logged)."""
    rows = [
        [label]
        + [f"{run.scalars[tag][-1].value:.4g}" if tag in run.scalars else "-" for tag in tags]
        for label, run in runs.items()
    ]
    return ["run", *tags], rows


def sole_component(run: Run, stage: str) -> str | None:
    """``run``'s only loss component at ``stage`` where it equals the total; else ``None``."""
    components = [tag for tag in run.scalars if tag.startswith(f"{stage}/loss/")]
    total = [event.value for event in run.scalars.get(f"{stage}/loss", [])]
    if len(components) != 1:
        return None
    (component,) = components
    return component if [event.value for event in run.scalars[component]] == total else None


def plot_curves(runs: Mapping[str, Run], tags: Sequence[str], out: Path) -> bool:
    """Plot every selected loss tag, one panel per stage, and save the figure as ``out``.

    Returns:
        Whether there was a loss curve to plot (nothing is written otherwise).
    """
    curves = [tag for tag in tags if tag_kind(tag) != METRIC]
    stages = list(dict.fromkeys(tag.partition("/")[0] for tag in curves))
    if not stages:
        return False
    columns = min(len(stages), PANELS_PER_ROW)
    rows = -(-len(stages) // columns)
    figure = Figure(figsize=(6.5 * columns, 4.5 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).flat
    for stage, axes in zip(stages, panels, strict=False):  # stages first: no panel skipped
        plot_stage(axes, runs, stage, [tag for tag in curves if tag.startswith(f"{stage}/")])
    for axes in panels:  # the unused rest of the last row
        axes.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return True


def plot_stage(axes: Axes, runs: Mapping[str, Run], stage: str, tags: Sequence[str]) -> None:
    """One line per labelled run (a colour each) and tag (a line style each) against the step.

    A run's only loss component, equal to its total, is not drawn under the total's line; the
    total's label names it instead (``loss (= loss/focal)``).
    """
    for colour, (label, run) in enumerate(runs.items()):
        copy = sole_component(run, stage)
        for style, tag in enumerate(tags):
            events = run.scalars.get(tag, [])
            if not events or tag == copy:
                continue
            name = tag.removeprefix(stage + "/")
            if copy is not None and tag == f"{stage}/loss":
                name += f" (= {copy.removeprefix(stage + '/')})"
            axes.plot(
                [event.step for event in events],
                [event.value for event in events],
                color=f"C{colour % 10}",
                linestyle=LINE_STYLES[style % len(LINE_STYLES)],
                marker="o" if len(events) == 1 else None,
                label=f"{label}: {name}",
            )
    axes.set(title=stage, xlabel="step", ylabel="value")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
