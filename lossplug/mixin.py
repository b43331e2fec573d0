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
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from lossplug._config import check_options, is_config, to_plain
from lossplug.input_checks import InputChecks
from lossplug.losses.base import LossModule
from lossplug.metrics import LossMetrics
from lossplug.nonfinite import NonFiniteGuard, drop_unless
from lossplug.optim import OptimizerSpec, SchedulerSpec
from lossplug.registry import build_loss
from lossplug.tensorboard import log_final_hparams, write_layout

STAGES = ("train", "val", "test")
#: where the mixin's own state (the skipped-step counter) is kept in a checkpoint.
CHECKPOINT_KEY = "lossplug"

# The epoch loss values are already summed over processes by LossMetrics (one all_reduce),
# so Lightning's advice to sync them again does not apply to them.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('(train|val|test)/loss"
)


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
    ) -> None:
        super().__init__()
        self._save_config_hyperparameters(inspect.currentframe())
        self.criterion = build_criterion(loss)
        self.input_checks = InputChecks(check_inputs)
        self.nonfinite = NonFiniteGuard(on_nonfinite)
        self._batch_idx = 0  # the current batch's index in its epoch, for messages
        #: the current training step's components, graph attached, for callbacks such as
        #: :class:`~lossplug.diagnostics.GradientDiagnostics`; ``None`` outside a step.
        self.step_components: dict[str, Tensor] | None = None
        names = self.criterion.component_names()
        # keyed "{stage}_loss": a key "train" would shadow nn.Module.train
        self.loss_metrics = nn.ModuleDict({f"{stage}_loss": LossMetrics(names) for stage in STAGES})
        self._optimizer_spec = OptimizerSpec.parse(optimizer)
        self._scheduler_spec = SchedulerSpec.parse(scheduler)

    # -- hooks a subclass may override ------------------------------------------------------

    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """The model's input and the target in a batch; by default the batch is ``(x, y)``."""
        inputs, target = batch
        return inputs, target

    def loss_inputs(self, output: Any, target: Any) -> tuple[Tensor, Tensor]:
        """The criterion's ``(pred, target)`` from the model's output; by default unchanged."""
        return output, target

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
        with self.input_checks.batch(stage, self.criterion, pred, loss_target):
            components, counts = self.criterion.measured_components(pred, loss_target)
        total = self.criterion.total(components)
        if stage == "train":
            self.step_components = components
        keep = self.nonfinite.observe(stage, self.current_epoch, self._batch_idx, total, components)
        self.log_loss(stage, total, components, counts, keep)
        if stage == "train" and self._writes_step_logs():
            self.nonfinite.check("train")  # the logger reads values back now anyway
        self.update_metrics(stage, output, target)
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The training loss of a batch."""
        return self.model_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The validation loss of a batch."""
        return self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The test loss of a batch."""
        return self.model_step(batch, "test")

    def log_loss(
        self,
        stage: str,
        total: Tensor,
        components: Mapping[str, Tensor],
        counts: Mapping[str, Tensor | int],
        keep: Tensor | None = None,
    ) -> None:
        """Accumulate a batch's components for the epoch; log training values per step.

        Per step (training only, this process's values, no sync), on the steps the trainer
        writes logs (``log_every_n_steps``): ``train_step/loss`` (also in the progress bar),
        ``train_step/loss/{name}`` and ``train/loss_weight/{name}`` for every weight that is
        not constant. Values logged on other steps would never reach a logger. The components
        go to the loggers in one call at the trainer's step: a ``self.log`` per key costs more
        than a small model's whole step (``scripts/bench_overhead.py``). Per epoch,
        every stage logs
        ``{stage}/loss`` and ``{stage}/loss/{name}`` from :class:`~lossplug.metrics.LossMetrics`:
        exact sample-weighted means over all processes, synced once per epoch.

        ``keep`` (a boolean device scalar, given under ``on_nonfinite="skip"``) leaves the
        batch out of the epoch means when false, without a host read.
        """
        if keep is not None:
            components, counts = drop_unless(keep, components, counts)
        self.loss_metrics[f"{stage}_loss"].update(components, counts)
        if stage != "train" or not self._writes_step_logs():
            return
        self.log("train_step/loss", total, on_step=True, on_epoch=False, prog_bar=True)
        self._write_to_loggers({f"train_step/loss/{k}": value for k, value in components.items()})
        for name, weight in self.criterion.varying_weights().items():
            self.log(f"train/loss_weight/{name}", weight, on_step=True, on_epoch=False)

    def _write_to_loggers(self, values: Mapping[str, Tensor]) -> None:
        """Write scalars to every logger at the step Lightning writes this step's logs.

        The values are read back in one transfer (one device sync, not one per value).
        """
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        read = torch.stack([value.detach().reshape(()) for value in values.values()]).tolist()
        scalars = dict(zip(values, read, strict=True))
        for logger in self.loggers:
            logger.log_metrics(scalars, step)

    def _writes_step_logs(self) -> bool:
        """Whether the trainer writes this training step's logs (``log_every_n_steps``).

        Values logged on other steps would reach only the progress bar, which keeps showing the
        last written ones; skipping ``self.log`` there saves most of the logging cost.
        """
        trainer = self.trainer
        return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs

    def log_epoch_loss(self, stage: str) -> None:
        """Log the epoch values of ``stage`` (one collective) and start a new epoch.

        Every process logs the same keys in the same order; the total is formed from the
        epoch means by the criterion with its current weights, so it equals the weighted sum
        of the logged components. The training means then go to the criterion's
        :meth:`~lossplug.LossModule.end_epoch` (weights that adapt per epoch); they are the
        same on every process, so every process gets the same weights.

        First the epoch's last batches are checked for non-finite losses (which raises under
        ``on_nonfinite="raise"``). Under ``"skip"``, ``{stage}/nonfinite_skipped`` is logged
        too: for training the optimizer steps dropped since the run began, for validation and
        test the batches left out of this epoch's means, over all processes.
        """
        dropped = self.nonfinite.end_epoch(stage)
        metric = self.loss_metrics[f"{stage}_loss"]
        means = metric.compute()
        metric.reset()
        options = {"on_step": False, "on_epoch": True, "sync_dist": False}
        self.log(f"{stage}/loss", self.criterion.total(means), prog_bar=stage == "val", **options)
        for name, value in means.items():
            self.log(f"{stage}/loss/{name}", value, prog_bar=stage == "train", **options)
        if self.nonfinite.skips and stage == "train":  # the same count on every process
            self.log("train/nonfinite_skipped", float(self.nonfinite.skipped_steps), **options)
        elif self.nonfinite.skips:
            dropped_here = {"on_epoch": True, "sync_dist": True, "reduce_fx": "sum"}
            self.log(f"{stage}/nonfinite_skipped", float(dropped), **dropped_here)
        if stage == "train":
            self.criterion.end_epoch(means)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Move scheduled loss weights to the current epoch and step."""
        self._batch_idx = batch_idx
        self.criterion.set_progress(self.current_epoch, self.global_step)

    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Note the batch's index (for messages about a non-finite loss)."""
        self._batch_idx = batch_idx

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Note the batch's index (for messages about a non-finite loss)."""
        self._batch_idx = batch_idx

    def on_after_backward(self) -> None:
        """Drop the step's components (their graph is spent)."""
        self.step_components = None

    def on_validation_epoch_start(self) -> None:
        """Validate with the weights of the current epoch and step (also after a resume)."""
        self.criterion.set_progress(self.current_epoch, self.global_step)

    def on_train_epoch_end(self) -> None:
        """Log the training epoch's loss values."""
        self.log_epoch_loss("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation epoch's loss values."""
        self.log_epoch_loss("val")

    def on_test_epoch_end(self) -> None:
        """Log the test epoch's loss values."""
        self.log_epoch_loss("test")

    def on_fit_start(self) -> None:
        """Write the TensorBoard custom-scalars layout once (rank 0).

        Raises:
            ValueError: for ``on_nonfinite="skip"`` with manual optimization (the step to
                skip is then the module's own).
        """
        if self.nonfinite.skips and not self.automatic_optimization:
            raise ValueError(
                "LossPlugMixin: on_nonfinite='skip' drops the optimizer steps Lightning takes; "
                "with manual optimization, check the loss in your training_step or use "
                "on_nonfinite='raise' or 'warn'"
            )
        if self.trainer.is_global_zero:
            write_layout(self.trainer.loggers, self.criterion.component_names())

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
            return
        super().optimizer_step(epoch, batch_idx, optimizer, lambda: loss)

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
        self.save_hyperparameters(ignore=built, frame=frame)
        for name, value in self.hparams.items():
            self.hparams[name] = to_plain(value)


def build_criterion(loss: Any) -> LossModule:
    """A loss module from a config, a registered name, a module or a callable.

    Raises:
        lossplug.ConfigError: for a config option the loss does not take.
        lossplug.UnknownLossError: for an unknown name.
    """
    if is_config(loss):
        check_options(loss, "loss")
        loss = instantiate(loss, _convert_="all")
    return build_loss(loss)


def _is_config_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, DictConfig, ListConfig)):
        return True
    if isinstance(value, Mapping):
        return all(_is_config_value(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_config_value(item) for item in value)
    return False
