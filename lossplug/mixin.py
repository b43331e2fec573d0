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
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from lossplug._config import check_options, is_config, to_plain
from lossplug.input_checks import InputChecks
from lossplug.losses.base import LossModule
from lossplug.metrics import LossMetrics
from lossplug.optim import OptimizerSpec, SchedulerSpec
from lossplug.registry import build_loss
from lossplug.tensorboard import log_final_hparams, write_layout

STAGES = ("train", "val", "test")

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

    The default steps expect ``(inputs, target)`` batches. For another layout override
    :meth:`split_batch`; to adapt the model's output to the loss override :meth:`loss_inputs`;
    to track metrics override :meth:`update_metrics`.
    """

    criterion: LossModule

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        check_inputs: str = "first",
    ) -> None:
        super().__init__()
        self._save_config_hyperparameters(inspect.currentframe())
        self.criterion = build_criterion(loss)
        self.input_checks = InputChecks(check_inputs)
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
        self.log_loss(stage, total, components, counts)
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
    ) -> None:
        """Accumulate a batch's components for the epoch; log training values per step.

        Per step (training only, this process's values, no sync): ``train_step/loss`` every
        step and ``train_step/loss/{name}`` on the steps the trainer writes logs
        (``log_every_n_steps``), both in the progress bar, with ``train/loss_weight/{name}``
        for every weight that is not constant; logging each component every step
        would cost more than the step itself for small models. Per epoch, every stage logs
        ``{stage}/loss`` and ``{stage}/loss/{name}`` from :class:`~lossplug.metrics.LossMetrics`:
        exact sample-weighted means over all processes, synced once per epoch.
        """
        self.loss_metrics[f"{stage}_loss"].update(components, counts)
        if stage != "train":
            return
        self.log("train_step/loss", total, on_step=True, on_epoch=False, prog_bar=True)
        if not self.trainer._logger_connector.should_update_logs:
            return
        for name, value in components.items():
            self.log(f"train_step/loss/{name}", value, on_step=True, on_epoch=False, prog_bar=True)
        for name, weight in self.criterion.varying_weights().items():
            self.log(f"train/loss_weight/{name}", weight, on_step=True, on_epoch=False)

    def log_epoch_loss(self, stage: str) -> None:
        """Log the epoch values of ``stage`` (one collective) and start a new epoch.

        Every process logs the same keys in the same order; the total is formed from the
        epoch means by the criterion with its current weights, so it equals the weighted sum
        of the logged components. The training means then go to the criterion's
        :meth:`~lossplug.LossModule.end_epoch` (weights that adapt per epoch); they are the
        same on every process, so every process gets the same weights.
        """
        metric = self.loss_metrics[f"{stage}_loss"]
        means = metric.compute()
        metric.reset()
        options = {"on_step": False, "on_epoch": True, "sync_dist": False}
        self.log(f"{stage}/loss", self.criterion.total(means), prog_bar=stage == "val", **options)
        for name, value in means.items():
            self.log(f"{stage}/loss/{name}", value, **options)
        if stage == "train":
            self.criterion.end_epoch(means)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Move scheduled loss weights to the current epoch and step."""
        self.criterion.set_progress(self.current_epoch, self.global_step)

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
        """Write the TensorBoard custom-scalars layout once (rank 0)."""
        if self.trainer.is_global_zero:
            write_layout(self.trainer.loggers, self.criterion.component_names())

    def on_fit_end(self) -> None:
        """Log hyperparameters with the final validation metrics as HPARAMS columns (rank 0)."""
        if self.trainer.is_global_zero:
            log_final_hparams(self.trainer.loggers, self.hparams, self.trainer.callback_metrics)

    # -- optimisation -----------------------------------------------------------------------

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
