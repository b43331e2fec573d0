"""The LightningModule mixin: a pluggable criterion, optimizer and scheduler, steps and logging.

Put :class:`LossPlugMixin` before ``L.LightningModule``::

    class LitClassifier(LossPlugMixin, L.LightningModule):
        def __init__(self, loss, optimizer, scheduler=None, hidden=64):
            super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
            self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)

and ``training_step``, ``validation_step``, ``test_step``, ``configure_optimizers`` and the
logging of every loss component come with it.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from lossplug._lightning import (
    current_dataloader_idx,
    current_hook,
    is_last_batch,
    logging_step,
    writes_step_logs,
)
from lossplug._validation import value_checks
from lossplug.config.options import check_options, is_config, to_plain
from lossplug.criterion_checks import check_mean_reduction, check_model_terms, term_mean
from lossplug.input_checks.schedule import InputChecks
from lossplug.losses.base import LossModule, batch_count
from lossplug.metrics import LossMetrics, reduce_together
from lossplug.nonfinite import NonFiniteGuard, NonFiniteLossError, drop_unless
from lossplug.normalize import GlobalNormalizer
from lossplug.optim import OptimizerSpec, SchedulerSpec
from lossplug.padding import PaddedEpoch, padded_epoch, take_rows
from lossplug.registry import build_loss
from lossplug.tensorboard import (
    CHART_STAGES,
    callback_charts,
    log_final_hparams,
    log_initial_hparams,
    write_layout,
    write_scalars,
)

STAGES = ("train", "val", "test")
#: the root of the logged names of the mixin's criterion: ``{stage}/loss``.
LOSS = "loss"
#: where the mixin's own state (the skipped-step counter) is kept in a checkpoint.
CHECKPOINT_KEY = "lossplug"

#: Lightning's advice, given when it computes the epoch values of a distributed run, to sync
#: lossplug's loss keys over processes: they are synced already (one all_reduce in LossMetrics).
SYNC_ADVICE = r"It is recommended to use `self\.log\('(train|val|test)/loss"


class LossPlugMixin:
    """Adds a criterion, optimizer and scheduler built from configs to a ``LightningModule``.

    Each argument is a config (a ``DictConfig`` or ``dict`` with ``_target_``) or a built
    object. Configs are checked against their target's signature before anything is built,
    and saved as hyperparameters, so ``load_from_checkpoint(path)`` needs no arguments; built
    objects are not saved and must be passed again when loading.

    Args:
        loss: a loss config, a registered loss name, a loss module or a callable
            ``f(pred, target)``; available as :attr:`criterion`.
        optimizer: an optimizer config or a factory called ``optimizer(params=...)``
            (see :mod:`lossplug.optim` for the parameter-group options).
        scheduler: ``None``, a scheduler config or a factory called ``scheduler(optimizer)``.
        check_inputs: when the criterion checks input values (class range, probabilities
            given to a logits loss, ...): ``"first"`` on the first batch of each stage (the
            default; later batches pay no host sync), ``"always"`` or ``"never"``. Shape and
            dtype checks always run: they cost nothing.
        on_nonfinite: what a NaN or infinite loss does (see :mod:`lossplug.nonfinite`):
            ``"raise"`` (the default) stops naming the stage, epoch, batch and components;
            ``"skip"`` drops the training step (no optimizer step) and leaves the batch out
            of the epoch means, counting dropped steps as ``train/nonfinite_skipped``;
            ``"warn"`` warns and goes on. Only ``"skip"`` reads a value on the host every
            optimizer step; the others check at the trainer's logging steps.
        normalize_loss: ``"batch"`` (the default): each training micro-batch backpropagates its
            own mean; ``"global"``: the gradient is that of the mean over every item of the
            optimizer step, all micro-batches of all processes, each component over its own
            count (see :mod:`lossplug.normalize`). Components sharing one count (one count
            group) cost one scalar ``all_reduce`` per step; a loss of ``G`` groups
            (contrastive's ``pos`` and ``neg``, a composite's terms) ``G - 1`` more backward
            passes per micro-batch and an ``all_reduce`` of ``G - 1`` gradients per step.

    The default steps expect ``(inputs, target)`` batches. For another layout override
    :meth:`split_batch`; to adapt the model's output to the loss override :meth:`loss_inputs`;
    to track metrics override :meth:`update_metrics`. A subclass that overrides a Lightning
    hook the mixin implements (``optimizer_step``, ``on_save_checkpoint``,
    ``on_train_batch_start``, ...) calls ``super()`` in it.
    """

    criterion: LossModule

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        check_inputs: str = "first",
        on_nonfinite: str = "raise",
        normalize_loss: str = "batch",
    ) -> None:
        super().__init__()
        self._save_config_hyperparameters(inspect.currentframe())
        self.criterion = build_criterion(loss)
        self.input_checks = InputChecks(check_inputs)
        self.nonfinite = NonFiniteGuard(on_nonfinite)
        self.normalizer = GlobalNormalizer(normalize_loss)
        #: the current training step's components, graph attached, for callbacks such as
        #: :class:`~lossplug.diagnostics.GradientDiagnostics`; ``None`` outside a step.
        self.step_components: dict[str, Tensor] | None = None
        #: the epoch accumulators, keyed ``"{stage}:{name}:{dataloader_idx}"``.
        self.loss_metrics = nn.ModuleDict()
        self._criteria: dict[str, LossModule] = {LOSS: self.criterion}
        self._batch_idx = 0  # the current batch's index in its epoch
        self._dataloader_idx = 0
        self._padding: dict[tuple[str, int], PaddedEpoch | None] = {}
        self._positions: dict[tuple[str, int], int] = {}  # batches of each loader this epoch
        self._batch_samples = 0  # samples in the current batch
        self._real_samples: int | None = None  # of them real, where the sampler repeats some
        self._own_epoch_keys: set[tuple[str | None, str]] = set()  # (hook, key) logged this epoch
        self._step_means: dict[str, LossMetrics] = {}  # per optimizer step, with accumulation
        self._user_keys: set[str] = set()
        self._left_to_user: set[str] = set()
        for stage in STAGES:
            self._epoch_metric(stage, LOSS, 0)
        self._optimizer_spec = OptimizerSpec.parse(optimizer)
        self._scheduler_spec = SchedulerSpec.parse(scheduler)

    # -- hooks a subclass may override ------------------------------------------------------

    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """The model's input and the target in a batch; by default the batch is ``(x, y)``."""
        inputs, target = batch
        return inputs, target

    def loss_inputs(self, output: Any, target: Any) -> tuple[Any, Any]:
        """The criterion's ``(pred, target)`` from the model's output; by default unchanged."""
        return output, target

    def model_terms(self, output: Any) -> Mapping[str, Tensor]:
        """Loss terms the model computed itself, by name; by default none.

        Each is a scalar (the batch's mean) or one value per sample (``(B,)``, exact under
        every sampler); the loss must declare them (:class:`~lossplug.CompositeLoss`'s
        ``model_terms``), which gives each a weight from config.
        """
        return {}

    def update_metrics(self, stage: str, output: Any, target: Any) -> None:
        """Update and log metrics for one batch of ``stage``; by default there are none."""

    # -- steps ------------------------------------------------------------------------------

    def model_step(self, batch: Any, stage: str) -> Tensor:
        """Run the model on a batch, compute and log every loss component once, return the total.

        Args:
            batch: a batch, split by :meth:`split_batch`.
            stage: ``"train"``, ``"val"`` or ``"test"``; the prefix of the logged names.

        Returns:
            The total loss.
        """
        inputs, target = self.split_batch(batch)
        output = self(inputs)
        pred, loss_target = self.loss_inputs(output, target)
        terms = self.model_terms(output)
        total = self.compute_loss(pred, loss_target, terms=terms, stage=stage)
        self.update_metrics(stage, output, target)
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The training loss of a batch."""
        return self.model_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The validation loss of a batch (each loader's values are logged apart)."""
        return self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The test loss of a batch (each loader's values are logged apart)."""
        return self.model_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """The model's output for a batch: its inputs alone, or ``(inputs, target)``."""
        inputs = batch if isinstance(batch, Tensor) else self.split_batch(batch)[0]
        return self(inputs)

    def compute_loss(
        self,
        pred: Any,
        target: Any,
        *,
        terms: Mapping[str, Tensor] | None = None,
        name: str = LOSS,
        stage: str | None = None,
    ) -> Tensor:
        """The loss of a batch, with every guarantee of the mixin's own steps.

        Call it from your own ``training_step``, ``validation_step`` or ``test_step`` (manual
        optimization included) in place of calling the criterion: it checks the inputs
        (``check_inputs``), watches for a non-finite loss (``on_nonfinite``), counts each
        component for the exact epoch means (the samples a distributed sampler repeats left
        out), logs it and hands the training components to gradient diagnostics. A criterion
        with ``gather=True`` scores every process's real samples: the repeats are left out of
        its batch before it gathers.

        Args:
            pred: the criterion's prediction (a tensor, or a dict/tuple for routed terms).
            target: the criterion's target.
            terms: loss terms the model computed (see :meth:`model_terms`).
            name: which criterion, and the root of its logged names: ``{stage}/{name}``,
                ``{stage}/{name}/{component}``, ``train_step/{name}``. Default ``"loss"``,
                :attr:`criterion`; others are registered with :meth:`register_criterion`.
            stage: ``"train"``, ``"val"`` or ``"test"``; default: the trainer's current one.

        Returns:
            The total loss (weighted sum of the components and terms) to backpropagate; for
            the mixin's criterion in training with ``normalize_loss="global"``, that times its
            count (the batch's sum of item losses; the logged values stay means), or, for a
            criterion of several count groups, the last group's sum, the others' gradients
            being taken here (see :mod:`lossplug.normalize`).

        Raises:
            ValueError: for a ``name`` no criterion is registered under; with
                ``normalize_loss="global"``, for a criterion of several count groups under
                ``precision="16-mixed"`` (a ``GradScaler``).
        """
        stage = stage or self._current_stage()
        criterion = self._criterion_for(name)
        terms = dict(terms or {})
        rows = self._real_rows(pred)
        if rows is not None and getattr(criterion, "gather", False):
            # every process gathers its real samples only, and each takes part in the gather
            pred, target = take_rows(pred, rows), take_rows(target, rows)
            terms = {term: take_rows(value, rows) for term, value in terms.items()}
            rows = None
        checks = stage if name == LOSS else f"{stage}/{name}"  # each criterion's first batch
        with self.input_checks.batch(stage, criterion, pred, target, key=checks):
            components, counts = criterion.measured_components(pred, target)
        if terms or criterion.model_term_names():
            check_model_terms(criterion, terms)
            samples = batch_count(pred)
            for term, value in terms.items():
                components[term], counts[term] = term_mean(value, samples)
        total = criterion.total(components)
        if stage == "train" and name == LOSS:
            self.step_components = components
        keep = self.nonfinite.observe(stage, self.current_epoch, self._batch_idx, total, components)
        logged, logged_counts = components, counts
        if rows == 0:  # repeats alone: weight 0, which still sizes a lazily named state
            logged_counts = dict.fromkeys(components, 0)
        elif rows is not None:
            logged, logged_counts = self._rows_only(criterion, pred, target, terms, rows)
        if keep is not None:
            logged, logged_counts = drop_unless(keep, logged, logged_counts)
        metric = self._epoch_metric(stage, name, self._dataloader_idx)
        metric.update(logged, logged_counts, batches=int(rows != 0))
        if stage == "train":
            self._log_step(name, criterion, total, components, counts)
            if name == LOSS and self.normalizer.on:
                parameters = parameters_of(self.trainer.optimizers)
                return self.normalizer.batch_sum(criterion, total, components, counts, parameters)
        return total

    def register_criterion(self, name: str, loss: Any = None) -> LossModule:
        """Add a criterion that :meth:`compute_loss` logs under ``name`` (call in ``__init__``).

        A GAN's generator and discriminator losses, say: every process registers the same
        names when the module is built, so their epoch values share the epoch's one
        collective.

        Args:
            name: the root of its logged names (``train/{name}``, ...); not ``"loss"``.
            loss: as the mixin's ``loss`` argument (a config, a registered name, a module or a
                callable); ``None`` for the mixin's own :attr:`criterion` under another name.

        Returns:
            The built criterion (a submodule, so it moves with the module).

        Raises:
            ValueError: for a name that is taken or empty.
        """
        if not name or name in self._criteria or "/" in name:
            raise ValueError(
                f"LossPlugMixin.register_criterion: name {name!r} must be new, non-empty and "
                f"without '/'; registered: {list(self._criteria)}"
            )
        criterion = self.criterion if loss is None else build_criterion(loss)
        if criterion is not self.criterion:
            self.add_module(f"criterion_{name}", criterion)
        self._criteria[name] = criterion
        for stage in STAGES:
            self._epoch_metric(stage, name, 0)
        return criterion

    def _rows_only(
        self, criterion: LossModule, pred: Any, target: Any, terms: Mapping[str, Tensor], rows: int
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """The components and counts of a batch's first ``rows`` samples."""
        with torch.no_grad(), value_checks(False):
            components, counts = criterion.measured_components(
                take_rows(pred, rows), take_rows(target, rows)
            )
            for term, value in terms.items():
                components[term], counts[term] = term_mean(take_rows(value, rows), rows)
        return components, counts

    def _real_rows(self, pred: Any) -> int | None:
        """How many leading rows of ``pred`` are real samples, if the sampler repeated some.

        The loss inputs must then have one row per sample of the batch; otherwise the repeats
        cannot be told apart, which is warned about once.
        """
        real = self._real_samples
        if real is None:
            return None
        rows = batch_count(pred)
        if rows != self._batch_samples:
            if "rows" not in self._left_to_user:
                self._left_to_user.add("rows")
                warnings.warn(
                    f"LossPlugMixin: the loss inputs have {rows} rows for a batch of "
                    f"{self._batch_samples} samples, so the "
                    f"{self._batch_samples - real} sample(s) the DistributedSampler repeats "
                    "in this batch count in the epoch means. Fix: give compute_loss one row "
                    "per sample (reduce per sample in loss_inputs or the loss), or let no "
                    "sampler pad (a dataset size divisible by the number of processes, or "
                    "DistributedSampler(drop_last=True))",
                    stacklevel=3,
                )
            return None
        return real

    def _start_batch(self, stage: str, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """Note where a batch stands: its index, loader, size and how many samples are real.

        The position in the sampler's order is counted here rather than taken from
        ``batch_idx``, which continues from a mid-epoch checkpoint while a plain loader
        starts its epoch over.
        """
        self._batch_idx, self._dataloader_idx = batch_idx, dataloader_idx
        key = (stage, dataloader_idx)
        position = self._positions.get(key, 0)
        self._positions[key] = position + 1
        if key not in self._padding:
            self._padding[key] = padded_epoch(self._stage_loader(stage, dataloader_idx))
        padded = self._padding[key]
        self._real_samples = None
        if padded is not None:
            self._batch_samples = batch_count(batch)
            real = padded.real_rows(position, self._batch_samples)
            self._real_samples = real if real < self._batch_samples else None

    def _stage_loader(self, stage: str, dataloader_idx: int) -> Any:
        """The loader this stage's batches come from, as the trainer set it up."""
        trainer = self.trainer
        loaders = {
            "train": trainer.train_dataloader,
            "val": trainer.val_dataloaders,
            "test": trainer.test_dataloaders,
        }.get(stage)
        # several train loaders make one combined batch: no row belongs to one sampler
        if isinstance(loaders, (list, tuple)) and stage != "train":
            return loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
        return loaders

    def _first_name(self, criterion: LossModule) -> str:
        """The first name ``criterion`` is registered under (one criterion may have several)."""
        return next(name for name, known in self._criteria.items() if known is criterion)

    def _set_progress(self) -> None:
        """Move every criterion's weights to the current epoch and step (each criterion once)."""
        for name, criterion in self._criteria.items():
            if self._first_name(criterion) == name:
                criterion.set_progress(self.current_epoch, self.global_step)

    def _current_stage(self) -> str:
        """The stage the trainer is running."""
        trainer = self.trainer
        if trainer.training:
            return "train"
        if trainer.testing:
            return "test"
        if trainer.validating or trainer.sanity_checking:
            return "val"
        raise RuntimeError(
            "LossPlugMixin.compute_loss: the trainer is in none of the stages train, val and "
            "test; pass stage='train', 'val' or 'test'"
        )

    def _criterion_for(self, name: str) -> LossModule:
        """The criterion registered under ``name``."""
        criterion = self._criteria.get(name)
        if criterion is None:
            raise ValueError(
                f"LossPlugMixin.compute_loss: no criterion is registered under name={name!r}; "
                f"register it in __init__ with self.register_criterion({name!r}, loss) (the "
                f"names: {list(self._criteria)})"
            )
        return criterion

    def _epoch_metric(self, stage: str, name: str, dataloader_idx: int) -> LossMetrics:
        """The epoch accumulator of ``name`` in ``stage`` for one loader, made on first use."""
        key = f"{stage}:{name}:{dataloader_idx}"
        if key not in self.loss_metrics:
            names = self._criteria[name].component_names()
            self.loss_metrics[key] = LossMetrics(names).to(self.device)
        return self.loss_metrics[key]

    # -- logging ----------------------------------------------------------------------------

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``; lossplug leaves every key you log here to you.

        Raises:
            ValueError: for a key lossplug has just logged in this epoch-end hook (log yours
                before calling ``super()`` in the hook, or under another name).
        """
        hook = current_hook(self)
        if (hook, name) in self._own_epoch_keys:
            raise ValueError(
                f"LossPlugMixin: {name!r} holds lossplug's exact epoch value, logged in this "
                "hook already; log yours before calling super() in the hook (lossplug then "
                "leaves the key to you), or under another name"
            )
        loader = current_dataloader_idx(self)
        several = loader is not None and kwargs.get("add_dataloader_idx", True)
        self._user_keys.add(f"{name}/dataloader_idx_{loader}" if several else name)
        super().log(name, value, *args, **kwargs)  # type: ignore[misc]

    def _log_own(self, name: str, value: Any, **options: Any) -> None:
        """Log one of lossplug's keys, unless the user logs that key."""
        if name in self._user_keys:
            if name not in self._left_to_user:
                self._left_to_user.add(name)
                warnings.warn(
                    f"LossPlugMixin: you log {name!r} yourself, so lossplug does not log its "
                    "own value under that name",
                    stacklevel=3,
                )
            return
        if options.get("on_epoch"):
            self._own_epoch_keys.add((current_hook(self), name))
        super().log(name, value, **options)  # type: ignore[misc]

    def _log_step(
        self,
        name: str,
        criterion: LossModule,
        total: Tensor,
        components: Mapping[str, Tensor],
        counts: Mapping[str, Tensor | int],
    ) -> None:
        """Log this process's values of an optimizer step, on the trainer's logging steps.

        ``train_step/{name}`` (also in the progress bar), ``train_step/{name}/{component}``
        and, for the mixin's criterion, ``train/loss_weight/{component}`` for every weight that
        is not constant. With gradient accumulation the values are the sample-weighted means
        over the step's micro-batches, written once, at the step. Values logged on other
        steps would never reach a logger. The total and the components go to the loggers in
        one call (the total's ``self.log`` feeds the progress bar only): a ``self.log`` per key
        costs more than a small model's whole step.
        """
        trainer = self.trainer
        if not writes_step_logs(trainer):
            return
        if trainer.accumulate_grad_batches > 1 and self.automatic_optimization:
            step = self._step_means.get(name)
            if step is None:
                step = self._step_means[name] = LossMetrics(criterion.component_names())
                step.to(total.device)
            step.update(components, counts)
            ends_step = (self._batch_idx + 1) % trainer.accumulate_grad_batches == 0
            if not (ends_step or is_last_batch(trainer)):
                return
            components = step.means(step.totals)
            step.reset()
            total = criterion.total(components)
        key = f"train_step/{name}"
        self._log_own(key, total, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        values = {key: total, **{f"{key}/{k}": v for k, v in components.items()}}
        self._write_to_loggers(values)
        if name == LOSS:
            for term, weight in criterion.varying_weights().items():
                self._log_own(f"train/loss_weight/{term}", weight, on_step=True, on_epoch=False)
        self.nonfinite.check("train")  # the logger reads values back now anyway

    def _write_to_loggers(self, values: Mapping[str, Tensor]) -> None:
        """Write scalars to every logger at the step Lightning writes this step's logs.

        The values are read back in one transfer (one device sync, not one per value).
        """
        values = {key: value for key, value in values.items() if key not in self._user_keys}
        if not values or not self.trainer.is_global_zero:
            return
        read = torch.stack([value.detach().reshape(()) for value in values.values()]).tolist()
        scalars = {**dict(zip(values, read, strict=True)), "epoch": float(self.current_epoch)}
        write_scalars(self.loggers, scalars, logging_step(self.trainer))

    def log_epoch_loss(self, stage: str) -> None:
        """Log the epoch values of ``stage`` (one collective) and start a new epoch.

        Each criterion name and loader logs ``{stage}/{name}`` and
        ``{stage}/{name}/{component}`` (with ``/dataloader_idx_{k}`` after them when the stage
        has several loaders), unless no batch of it reached the loss this epoch on any
        process. The values are the exact sample-weighted means over every process; the total
        is formed from the epoch means by the criterion with its current weights, so it
        equals the weighted sum of the logged components. The training means then go to the
        criterion's :meth:`~lossplug.LossModule.end_epoch` (weights that adapt per epoch);
        they are the same on every process, so every process gets the same weights.

        First the epoch's last batches are checked for non-finite losses (which raises under
        ``on_nonfinite="raise"``). Under ``"skip"``, ``{stage}/nonfinite_skipped`` is logged
        too: for training the optimizer steps dropped since the run began, for validation and
        test the batches left out of this epoch's means, over all processes.

        Under DDP the values Lightning has yet to compute for this stage (a torchmetrics
        ``Metric`` you log, a value logged with ``sync_dist=True``) are computed first, on
        every process, so that every process runs its collectives in the same order.
        """
        try:
            dropped, failure = self.nonfinite.end_epoch(stage), None
        except NonFiniteLossError as error:  # raised below, on every process alike
            dropped, failure = 0, error
        loaders = self._loader_count(stage)
        slots = [(name, k) for name in self._criteria for k in range(loaders)]
        metrics = [self._epoch_metric(stage, name, k) for name, k in slots]
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            _ = self.trainer.callback_metrics  # Lightning's own syncs, in Lightning's order
        device = metrics[0].totals.device
        flags = [float(dropped), float(failure is not None)]
        extra = torch.tensor(flags, dtype=torch.float64, device=device)
        *states, extra = reduce_together([metric.totals for metric in metrics] + [extra])
        if failure is not None:
            raise failure
        if extra[1] > 0:
            raise NonFiniteLossError(
                f"Non-finite {stage} loss on another process (its own error names the batch); "
                "on_nonfinite=raise stops every process"
            )
        batches = torch.stack([state[0, -1] for state in states]).tolist()
        options = {
            "on_step": False,
            "on_epoch": True,
            "sync_dist": False,
            "add_dataloader_idx": False,
        }
        for (name, k), metric, state, seen in zip(slots, metrics, states, batches, strict=True):
            metric.reset()
            if not seen:
                continue
            means = metric.means(state)
            criterion = self._criteria[name]
            suffix = f"/dataloader_idx_{k}" if loaders > 1 else ""
            total = criterion.total(means)
            self._log_own(f"{stage}/{name}{suffix}", total, prog_bar=stage == "val", **options)
            for term, value in means.items():
                key = f"{stage}/{name}/{term}{suffix}"
                self._log_own(key, value, prog_bar=stage == "train", **options)
            if stage == "train" and self._first_name(criterion) == name:
                criterion.end_epoch(means)
        if self.nonfinite.skips and stage == "train":  # the same count on every process
            self._log_own("train/nonfinite_skipped", float(self.nonfinite.skipped_steps), **options)
        elif self.nonfinite.skips:
            self._log_own(f"{stage}/nonfinite_skipped", extra[0].float(), **options)

    def _loader_count(self, stage: str) -> int:
        """How many loaders the stage runs (validation and test may have several)."""
        trainer = self.trainer
        if stage == "train":
            return 1
        if stage == "test":
            counts = trainer.num_test_batches
        elif trainer.sanity_checking:
            counts = trainer.num_sanity_val_batches
        else:
            counts = trainer.num_val_batches
        return max(1, len(counts)) if isinstance(counts, (list, tuple)) else 1

    def _start_epoch(self, stage: str) -> None:
        """Forget the last epoch's loaders (they may be reloaded), positions, keys, buffers."""
        self._own_epoch_keys.clear()
        for key in [key for key in self._padding if key[0] == stage]:
            del self._padding[key]
        for key in [key for key in self._positions if key[0] == stage]:
            del self._positions[key]
        if stage == "train":
            for step in self._step_means.values():
                step.reset()

    # -- Lightning hooks (a subclass that overrides one calls super()) ----------------------

    def on_train_epoch_start(self) -> None:
        """Start the epoch's bookkeeping."""
        self._start_epoch("train")

    def on_validation_epoch_start(self) -> None:
        """Validate with the weights of the current epoch and step (also after a resume)."""
        self._start_epoch("val")
        self._set_progress()

    def on_test_epoch_start(self) -> None:
        """Start the epoch's bookkeeping; chart the test stage too."""
        self._start_epoch("test")
        self._write_layout(test=True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Move scheduled loss weights to the current epoch and step; note the batch."""
        self._start_batch("train", batch, batch_idx, 0)
        self._set_progress()

    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Note the batch and its loader."""
        self._start_batch("val", batch, batch_idx, dataloader_idx)

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Note the batch and its loader."""
        self._start_batch("test", batch, batch_idx, dataloader_idx)

    def on_after_backward(self) -> None:
        """Drop the step's components (their graph is spent)."""
        self.step_components = None

    def on_train_epoch_end(self) -> None:
        """Log the training epoch's loss values."""
        self.log_epoch_loss("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation epoch's loss values."""
        self.log_epoch_loss("val")

    def on_test_epoch_end(self) -> None:
        """Log the test epoch's loss values."""
        self.log_epoch_loss("test")

    def setup(self, stage: str) -> None:
        """Silence Lightning's advice to sync lossplug's epoch values, for this run only."""
        warnings.filterwarnings("ignore", message=SYNC_ADVICE)

    def teardown(self, stage: str) -> None:
        """Give the warning filters back as they were before :meth:`setup`."""
        warnings.filters[:] = [entry for entry in warnings.filters if not _is_sync_advice(entry)]

    def on_fit_start(self) -> None:
        """Lay out TensorBoard's charts of the fit's stages; other loggers get the hyperparameters.

        Both on rank 0; TensorBoard gets the hyperparameters at the end (:meth:`on_fit_end`).
        ``normalize_loss="global"`` learns whether a ``GradScaler`` scales the loss.

        Raises:
            ValueError: for ``on_nonfinite="skip"`` or ``normalize_loss="global"`` with manual
                optimization (the step is then the module's own).
        """
        if self.normalizer.on and not self.automatic_optimization:
            raise ValueError(
                "LossPlugMixin: normalize_loss='global' rescales the gradients of the optimizer "
                "steps Lightning takes; with manual optimization use normalize_loss='batch'"
            )
        if self.nonfinite.skips and not self.automatic_optimization:
            raise ValueError(
                "LossPlugMixin: on_nonfinite='skip' drops the optimizer steps Lightning takes; "
                "with manual optimization your training_step calls the optimizers itself. "
                "Fix: use on_nonfinite='raise' or 'warn', or skip the step yourself: "
                "`loss = self.compute_loss(...)`, then `if torch.isfinite(loss): "
                "self.manual_backward(loss); opt.step()`"
            )
        self.normalizer.loss_scaling = (
            getattr(self.trainer.precision_plugin, "scaler", None) is not None
        )
        self._write_layout(test=False)
        if self.trainer.is_global_zero:
            log_initial_hparams(self.trainer.loggers, self.hparams)

    def _write_layout(self, *, test: bool) -> None:
        """The TensorBoard custom-scalars charts of the stages (the test stage's once it runs)."""
        if self.trainer.is_global_zero:
            write_layout(
                self.trainer.loggers,
                stages=[stage for stage in CHART_STAGES if test or stage != "test"],
                weights=bool(self.criterion.varying_weights()),
                extra_charts=callback_charts(self.trainer.callbacks),
            )

    def on_fit_end(self) -> None:
        """Log hyperparameters with the final validation metrics as HPARAMS columns (rank 0)."""
        if self.trainer.is_global_zero:
            log_final_hparams(self.trainer.loggers, self.hparams, self.trainer.callback_metrics)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check for non-finite losses first (no poisoned checkpoint); keep the skip counter."""
        self.nonfinite.check("train")
        checkpoint[CHECKPOINT_KEY] = self.nonfinite.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the skip counter."""
        self.nonfinite.load_state_dict(checkpoint.get(CHECKPOINT_KEY, {}))

    # -- optimisation -----------------------------------------------------------------------

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step the optimizer, unless ``on_nonfinite="skip"`` drops this step.

        Under ``"skip"`` the closure (training step and backward) runs first, then one host
        read decides: a non-finite loss in any batch of the step, on any process, leaves the
        optimizer uncalled. The optimizer must evaluate its closure once (not L-BFGS).
        """
        if not self.nonfinite.skips:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return
        loss = optimizer_closure() if optimizer_closure is not None else None
        if self.nonfinite.end_step():
            self.normalizer.discard()
            return
        super().optimizer_step(epoch, batch_idx, optimizer, lambda: loss)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """With ``normalize_loss="global"``: the gradient of the step's mean (before clipping)."""
        self.normalizer.rescale(
            parameters_of([optimizer]),
            self.trainer.accumulate_grad_batches,
            self.trainer.world_size,
        )

    def configure_optimizers(self) -> Any:
        """The optimizer over every trainable parameter (the criterion's too) and its scheduler."""
        optimizer = self._optimizer_spec.build(self)
        if self._scheduler_spec is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": self._scheduler_spec.build(optimizer, self.trainer),
        }

    # -- hyperparameters --------------------------------------------------------------------

    def _save_config_hyperparameters(self, frame: Any) -> None:
        """Save the constructor arguments that are configs (not built objects), as plain dicts."""
        init_args: dict[str, Any] = {}
        for args in collect_init_args(frame, [], classes=(HyperparametersMixin,)):
            init_args.update(args)
        built = [name for name, value in init_args.items() if not _is_config_value(value)]
        # logged by the mixin itself (lossplug.tensorboard.log_final_hparams), once
        self.save_hyperparameters(ignore=built, frame=frame, logger=False)
        for name, value in self.hparams.items():
            self.hparams[name] = to_plain(value)


def parameters_of(optimizers: Iterable[Any]) -> Iterator[Tensor]:
    """The parameters of ``optimizers``, read when iterated."""
    return (p for opt in optimizers for group in opt.param_groups for p in group["params"])


def _is_sync_advice(entry: tuple[Any, ...]) -> bool:
    """Whether a ``warnings.filters`` entry is the one :meth:`LossPlugMixin.setup` adds."""
    message = entry[1]
    return entry[0] == "ignore" and message is not None and message.pattern == SYNC_ADVICE


def build_criterion(loss: Any) -> LossModule:
    """A loss module from a config, a registered name, a module or a callable.

    Raises:
        lossplug.ConfigError: for a config option the loss does not take.
        lossplug.UnknownLossError: for an unknown name.
    """
    if is_config(loss):
        check_options(loss, "loss")
        loss = instantiate(loss, _convert_="all")
    criterion = build_loss(loss)
    check_mean_reduction(criterion)
    return criterion


def _is_config_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, DictConfig, ListConfig)):
        return True
    if isinstance(value, Mapping):
        return all(_is_config_value(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_config_value(item) for item in value)
    return False
