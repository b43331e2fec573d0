"""Every functional loss compiles with ``torch.compile(fullgraph=True)`` and matches eager mode.

``fullgraph=True`` turns any graph break into an error. The fast test traces forward and
backward with the ``aot_eager`` backend (Dynamo capture + AOTAutograd, where graph breaks and
untraceable autograd functions show up); the slow one also generates Inductor code. Value
checks, which read tensors on the host, are skipped while compiling
(``lossplug._validation.value_checks_apply``), so compiled and eager values must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch

from lossplug import functional as LF
from lossplug.functional.overlap import dice_ce

# tiny inputs: N=2, C=3, 4x4 images; 8 embeddings of 3 dimensions in 3 classes
_LOGITS = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
_LABELS = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
_BINARY = torch.randint(0, 2, (2, 3, 4, 4), generator=torch.Generator().manual_seed(2)).float()
_EMBEDDINGS = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
_EMBEDDING_LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
_IGNORED = _LABELS.masked_fill(_LABELS == 2, 255)
# 2x128x128 = 32768 positions: the Dice statistics' paths for large CPU inputs (flat offsets)
_LARGE_LOGITS = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 3
_LARGE_LABELS = torch.randint(0, 3, (2, 128, 128), generator=torch.Generator().manual_seed(5))


def _loss_cases() -> dict[str, tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]]:
    logits, labels, binary = _LOGITS, _LABELS, _BINARY
    emb, emb_labels = _EMBEDDINGS, _EMBEDDING_LABELS
    return {
        "mse": (LF.mse, (logits, binary)),
        "l1": (LF.l1, (logits, binary)),
        "huber": (partial(LF.huber, delta=0.5), (logits, binary)),
        "smooth_l1": (partial(LF.smooth_l1, beta=0.5), (logits, binary)),
        "charbonnier": (partial(LF.charbonnier, subtract_eps=True), (logits, binary)),
        "quantile": (
            partial(LF.quantile_loss, quantiles=[0.1, 0.5, 0.9]),
            (logits.movedim(1, -1), binary[:, 0]),
        ),
        "cross_entropy": (partial(LF.cross_entropy, label_smoothing=0.1), (logits, labels)),
        "bce": (LF.bce, (logits, binary)),
        "kl_div": (LF.kl_div, (logits.log_softmax(1), logits.softmax(1).flip(0))),
        "hinge": (partial(LF.hinge, mode="multiclass"), (logits, labels)),
        "focal_binary": (partial(LF.focal, alpha=0.25), (logits, binary)),
        "focal_multiclass": (
            partial(LF.focal, mode="multiclass", gamma=0.5, alpha=[0.2, 0.3, 0.5]),
            (logits, labels),
        ),
        "poly1_multiclass": (partial(LF.poly1, gamma=0.5, ignore_index=255), (logits, _IGNORED)),
        "poly1_binary": (partial(LF.poly1, mode="binary", gamma=2.0, alpha=0.25), (logits, binary)),
        "asymmetric": (partial(LF.asymmetric, gamma_pos=0.5, clip=0.1), (logits, binary)),
        "dice": (partial(LF.dice, ignore_index=255), (logits, _IGNORED)),
        "dice_multilabel": (partial(LF.dice, mode="multilabel"), (logits, binary)),
        "tversky": (partial(LF.tversky, alpha=0.3, beta=0.7, gamma=0.75), (logits, labels)),
        "generalized_dice": (partial(LF.generalized_dice, ignore_index=255), (logits, _IGNORED)),
        "lovasz_softmax": (partial(LF.lovasz_softmax, ignore_index=255), (logits, _IGNORED)),
        "lovasz_softmax_per_image": (partial(LF.lovasz_softmax, per_image=True), (logits, labels)),
        "lovasz_hinge": (LF.lovasz_hinge, (logits, binary)),
        "dice_ce": (partial(dice_ce, ignore_index=255, batch=True), (logits, _IGNORED)),
        "dice_large": (LF.dice, (_LARGE_LOGITS, _LARGE_LABELS)),
        "dice_ce_large": (dice_ce, (_LARGE_LOGITS, _LARGE_LABELS)),
        "contrastive": (LF.contrastive, (emb, emb_labels)),
        "triplet": (LF.triplet, (emb, emb_labels)),
        "triplet_batch_hard": (partial(LF.triplet, mining="batch_hard"), (emb, emb_labels)),
        "triplet_margin": (LF.triplet_margin, (emb, emb.roll(1, 0), emb.flip(0))),
        "infonce": (partial(LF.infonce, temperature=0.2), (emb, emb_labels)),
        "supcon": (LF.supcon, (emb, emb_labels)),
    }


CASES = _loss_cases()


def _value_and_grad(
    fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    pred = inputs[0].detach().clone().requires_grad_()
    loss = fn(pred, *inputs[1:])
    (grad,) = torch.autograd.grad(loss, pred)
    return loss.detach(), grad


def _check_compiled(name: str, backend: str, dynamic: bool = False) -> None:
    fn, inputs = CASES[name]
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=backend)
    value, grad = _value_and_grad(compiled, inputs)
    expected_value, expected_grad = _value_and_grad(fn, inputs)
    assert torch.isfinite(value) and value.item() != 0.0
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles_without_graph_breaks(name, dynamic):
    # dynamic=True traces symbolic shapes and passes float options as symbolic floats
    _check_compiled(name, backend="aot_eager", dynamic=dynamic)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_inductor_matches_eager(name):
    _check_compiled(name, backend="inductor")


def test_a_graph_break_would_fail():
    # the check is live: a host read inside a loss breaks the graph and fullgraph refuses it
    def breaks(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target > 0).any()):
            return LF.mse(pred, target)
        return pred.sum()

    compiled = torch.compile(breaks, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=r"(?i)data-dependent|graph break|generic_jump"):
        compiled(_LOGITS, _BINARY)
