"""What the per-batch weightings ``famo`` and ``aligned_mtl`` cost per training step, against fixed.

A multi-task MLP on the digits' input size: an encoder ``64 -> width -> ... -> 64`` (tanh) gives
the shared features ``z``, read by a 10-class head (cross-entropy) and a regression head (mean
squared error); batch 64, SGD, one process, plain PyTorch (no Trainer: the weighting's own
cost, undiluted by Lightning's). A step is forward, ``CompositeLoss.components`` and
``total``, backward and the optimizer step, with the same composite loss under
``weighting="fixed"``, ``"famo"`` (a few operations on the 2 term values, and the logits'
update) and ``"aligned_mtl"`` (one backward pass per term from the loss to ``z``, a 2 x 2 Gram
matrix and its eigendecomposition). Two encoders: a small one (one hidden layer of 256) and a
deep one (three of 1024): the extra work never goes through the encoder, so the deeper the
encoder, the smaller the ratio.

The weightings are sampled in turn (:func:`benchmarks.benchkit.time_steps`); a ratio is the
median of side-by-side ratios against ``fixed``, with its quartiles. A complete run writes the
table into ``docs/performance/weighting.md``, which ``docs/weighting.md`` includes.

    python -m benchmarks.bench_weighting --threads 1  # bench_results/bench_weighting.{json,md}
    python -m benchmarks.bench_weighting --quick      # a smoke run
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from benchmarks.benchkit import (
    Step,
    machine_info,
    paired_ratio_quartiles,
    sampling_parser,
    time_steps,
    write_results,
)
from benchmarks.performance_page import write_fragment
from lossplug import CompositeLoss
from lossplug.losses import CrossEntropyLoss, MSELoss

BATCH, FEATURES, SHARED = 64, 64, 64
#: encoder hidden widths by name
ENCODERS = {"small (64-256-64)": (256,), "deep (64-1024x3-64)": (1024, 1024, 1024)}
WEIGHTINGS = ("fixed", "famo", "aligned_mtl")
LEARNED = WEIGHTINGS[1:]


class MultiTask(nn.Module):
    """An MLP encoder and two heads; the output dict names the shared features."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        super().__init__()
        widths = (FEATURES, *hidden, SHARED)
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.Tanh()]
        self.encoder = nn.Sequential(*layers)
        self.digit, self.ink = nn.Linear(SHARED, 10), nn.Linear(SHARED, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Both heads' outputs and the shared features."""
        z = self.encoder(x)
        return {"digit": self.digit(z), "ink": self.ink(z).squeeze(-1), "features": z}


def make_loss(weighting: str) -> CompositeLoss:
    routes = {name: {"pred": name, "target": name} for name in ("digit", "ink")}
    return CompositeLoss(
        {"digit": CrossEntropyLoss(), "ink": MSELoss()},
        inputs=routes,
        weighting=weighting,
        shared="features",
    )


def training_step(model: MultiTask, loss: CompositeLoss) -> Step:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, FEATURES, generator=generator)
    target = {
        "digit": torch.randint(0, 10, (BATCH,), generator=generator),
        "ink": torch.randn(BATCH, generator=generator),
    }

    def step() -> None:
        optimizer.zero_grad()
        loss.total(loss.components(model(x), target)).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = sampling_parser(__doc__.split("\n\n")[0], repeats=41, warmup=20, min_sample_s=0.05)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.min_sample_s = 3, 2, 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    header = ["encoder", "weighting", "ms / step", "fixed ms / step", "ratio", "ratio quartiles"]
    rows = []
    for encoder, hidden in ENCODERS.items():
        torch.manual_seed(0)
        model = MultiTask(hidden)
        losses = {weighting: make_loss(weighting) for weighting in WEIGHTINGS}
        steps = {weighting: training_step(model, losses[weighting]) for weighting in WEIGHTINGS}
        samples = time_steps(
            steps,
            device,
            repeats=args.repeats,
            warmup=args.warmup,
            min_sample_s=args.min_sample_s,
        )
        median_ms = {name: 1e3 * sorted(times)[len(times) // 2] for name, times in samples.items()}
        for weighting in LEARNED:
            assert torch.isfinite(losses[weighting].learned.factors()).all()
            first, ratio, third = paired_ratio_quartiles(samples[weighting], samples["fixed"])
            rows.append(
                [
                    encoder,
                    weighting,
                    round(median_ms[weighting], 3),
                    round(median_ms["fixed"], 3),
                    round(ratio, 3),
                    f"{first:.3f}-{third:.3f}",
                ]
            )
    payload = {
        "machine": machine_info(device),
        "settings": {
            "batch": BATCH,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "min_sample_s": args.min_sample_s,
            "threads": torch.get_num_threads(),
            "quick": args.quick,
        },
        "rows": [dict(zip(header, row, strict=True)) for row in rows],
    }
    title = (
        "famo and aligned_mtl against fixed weights, per training step of a two-head MLP "
        f"(batch {BATCH}, SGD, one process, {torch.get_num_threads()} torch thread(s))"
    )
    write_results(args.out, "bench_weighting", payload, title, header, rows)
    if not args.quick:
        write_fragment("weighting", title, payload["machine"], header, rows)


if __name__ == "__main__":
    main()
