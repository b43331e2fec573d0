"""Aligned-MTL on the shared representation: the weights and the update against formulas.

The two-task toy's reference is written out by hand: each term's gradient on the features, the
2 x 2 Gram matrix, its square root in closed form and every parameter's gradient of the
weighted total. Other references use numpy's SVD (the orthogonal Procrustes form of the
method, tests/helpers/multitask_cases.py), never lossplug's weighting.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from multitask_cases import ROUTES, TwoHeads, aligned_loss, dataset, procrustes_weights
from torch import nn

from lossplug import CompositeLoss
from lossplug.losses import L1Loss, MSELoss
from lossplug.weighting import AlignedMTL
from lossplug.weighting.aligned import aligned_factors, shared_gram

# -- the two-task toy, by hand --------------------------------------------------------------

BATCH, FEATURES, WIDTH = 7, 5, 3


class Toy(nn.Module):
    """A linear encoder and two scalar linear heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.encoder = nn.Linear(FEATURES, WIDTH).double()
        self.head_a = nn.Linear(WIDTH, 1).double()
        self.head_b = nn.Linear(WIDTH, 1).double()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        return {"a": self.head_a(z).squeeze(-1), "b": self.head_b(z).squeeze(-1), "z": z}


def toy_data() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(BATCH, FEATURES, generator=generator, dtype=torch.float64)
    y_a = torch.randn(BATCH, generator=generator, dtype=torch.float64)
    y_b = 10.0 * torch.randn(BATCH, generator=generator, dtype=torch.float64)  # a larger scale
    return x, {"a": y_a, "b": y_b}


def toy_loss() -> CompositeLoss:
    routes = {name: {"pred": name, "target": name} for name in ("a", "b")}
    loss = CompositeLoss(
        {"a": MSELoss(), "b": MSELoss()}, inputs=routes, weighting="aligned_mtl", shared="z"
    )
    return loss.double()


def by_hand(model: Toy, x: torch.Tensor, y: dict[str, torch.Tensor], lr: float):
    """The weights and the parameters after one SGD step, from the formulas."""
    w, c = model.encoder.weight.detach(), model.encoder.bias.detach()
    u, d_a = model.head_a.weight.detach()[0], model.head_a.bias.detach()[0]
    v, d_b = model.head_b.weight.detach()[0], model.head_b.bias.detach()[0]
    z = x @ w.T + c
    r_a, r_b = z @ u + d_a - y["a"], z @ v + d_b - y["b"]  # residuals
    # dL_a/dz = (2/B) r_a u^T, so <g_a, g_b> = (4/B^2) (r_a . r_b)(u . v)
    k = 4.0 / BATCH**2
    p = k * float(r_a @ r_a) * float(u @ u)
    q = k * float(r_a @ r_b) * float(u @ v)
    s = k * float(r_b @ r_b) * float(v @ v)
    # sqrt of [[p, q], [q, s]]: (M + sqrt(det) I) / sqrt(tr + 2 sqrt(det)); alpha =
    # sigma_min M^(-1/2) 1, sigma_min^2 the smaller eigenvalue
    det, trace = p * s - q * q, p + s
    root = math.sqrt(det)
    scale = math.sqrt(trace + 2 * root)
    a11, a12, a22 = (p + root) / scale, q / scale, (s + root) / scale  # M^(1/2)
    inv_det = 1.0 / (a11 * a22 - a12 * a12)
    lam_min = (trace - math.sqrt(trace * trace - 4 * det)) / 2
    alpha_a = math.sqrt(lam_min) * inv_det * (a22 - a12)
    alpha_b = math.sqrt(lam_min) * inv_det * (a11 - a12)
    # the total alpha_a L_a + alpha_b L_b, every parameter's gradient
    e_a, e_b = alpha_a * 2.0 / BATCH * r_a, alpha_b * 2.0 / BATCH * r_b
    grad_z = e_a[:, None] * u[None, :] + e_b[:, None] * v[None, :]
    updated = {
        "encoder.weight": w - lr * grad_z.T @ x,
        "encoder.bias": c - lr * grad_z.sum(0),
        "head_a.weight": (u - lr * z.T @ e_a)[None, :],
        "head_a.bias": (d_a - lr * e_a.sum()).reshape(1),
        "head_b.weight": (v - lr * z.T @ e_b)[None, :],
        "head_b.bias": (d_b - lr * e_b.sum()).reshape(1),
    }
    return [alpha_a, alpha_b], updated, q


def test_two_task_toy_weights_and_sgd_step_equal_the_hand_computation():
    model, loss = Toy(), toy_loss()
    x, y = toy_data()
    weights, expected, inner = by_hand(model, x, y, lr=0.05)
    assert inner < 0  # the terms' gradients conflict on z here
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss(model(x), y).backward()
    optimizer.step()
    got = loss.varying_weights()
    assert [got["a"].item(), got["b"].item()] == pytest.approx(weights, rel=1e-12)
    assert weights[0] > 5 * weights[1]  # the term on the small scale gains, b's falls
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name], rtol=1e-12, atol=1e-12)


def test_the_weights_are_those_of_the_procrustes_solution_for_three_terms():
    """sum_i alpha_i g_i is the sum of the orthogonal, equal-norm gradients nearest the g_i."""
    torch.manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    heads = [torch.randn(4, dtype=torch.float64) for _ in range(3)]
    targets = [torch.randn(6, dtype=torch.float64) * scale for scale in (1.0, 5.0, 0.2)]
    pred = {f"h{i}": z @ head for i, head in enumerate(heads)} | {"z": z}
    names = [f"h{i}" for i in range(3)]
    loss = CompositeLoss(
        {name: L1Loss() if name == "h1" else MSELoss() for name in names},
        inputs={name: {"pred": name, "target": name} for name in names},
        weighting="aligned_mtl",
        shared="z",
    ).double()
    target = dict(zip(names, targets, strict=True))
    components = loss.components(pred, target)
    loss.total(components)
    gradients = np.stack(
        [torch.autograd.grad(components[n], z, retain_graph=True)[0].reshape(-1) for n in names]
    )
    got = loss.learned.factors().numpy()
    np.testing.assert_allclose(got, procrustes_weights(gradients), rtol=1e-10)
    assert np.linalg.norm(got) <= math.sqrt(3)


# -- the factors from a Gram matrix ---------------------------------------------------------


def test_the_factors_ignore_a_common_scale_of_the_gram_matrix():
    generator = torch.Generator().manual_seed(4)
    g = torch.randn(3, 10, generator=generator, dtype=torch.float64)
    gram = g @ g.T
    for scale in (1e-8, 0.25, 4.0, 1e6):  # a batch mean's 1/B, DDP's 1/W (squared)
        torch.testing.assert_close(aligned_factors(scale * gram), aligned_factors(gram))


def test_parallel_gradients_keep_the_one_direction_there_is():
    # g_b = 2 g_a: rank 1, v = (1, 2)/sqrt(5), B = v v^T, alpha = v (v . 1) = (3/5, 6/5)
    factors = aligned_factors(torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64))
    assert factors.tolist() == pytest.approx([0.6, 1.2], rel=1e-12)


def test_a_term_that_does_not_reach_z_keeps_factor_one_and_the_others_are_aligned_alone():
    generator = torch.Generator().manual_seed(5)
    g = torch.randn(2, 8, generator=generator, dtype=torch.float64)
    gram = torch.zeros(3, 3, dtype=torch.float64)
    gram[:2, :2] = g @ g.T
    factors = aligned_factors(gram)
    assert factors[2].item() == 1.0
    np.testing.assert_allclose(factors[:2].numpy(), procrustes_weights(g.numpy()), rtol=1e-10)


def test_no_gradient_and_a_non_finite_gram_give_factor_one():
    assert aligned_factors(torch.zeros(3, 3)).tolist() == [1.0, 1.0, 1.0]
    nan = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]])
    assert aligned_factors(nan).tolist() == [1.0, 1.0]
    inf = torch.tensor([[float("inf"), 0.0], [0.0, 2.0]])
    assert aligned_factors(inf).tolist() == [1.0, 1.0]


def test_the_factors_stay_within_sqrt_k_even_when_nearly_degenerate():
    generator = torch.Generator().manual_seed(6)
    for k in (2, 3, 5):
        base = torch.randn(1, 20, generator=generator, dtype=torch.float64)
        g = base + 1e-6 * torch.randn(k, 20, generator=generator, dtype=torch.float64)
        factors = aligned_factors(g @ g.T)
        assert torch.isfinite(factors).all()
        assert factors.norm().item() <= math.sqrt(k) * (1 + 1e-9)


# -- in the composite -----------------------------------------------------------------------


def two_heads_batch(dtype: torch.dtype = torch.float64):
    data = dataset(12, dtype)
    x, value, label = data.tensors
    model = TwoHeads().to(dtype)
    return model, model(x), {"value": value, "class": label}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # x needs no gradient
def test_one_backward_pass_per_term_through_its_head_never_the_encoder():
    model, _, target = two_heads_batch()
    loss = aligned_loss().double()
    calls = {"encoder": 0, "value_head": 0, "class_head": 0}
    for name in calls:
        module = getattr(model, name)
        module.register_full_backward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    out = model(dataset(12).tensors[0])
    total = loss.total(loss.components(out, target))
    assert calls == {"encoder": 0, "value_head": 1, "class_head": 1}
    total.backward()
    assert calls == {"encoder": 1, "value_head": 2, "class_head": 2}


def test_weights_are_detached_and_the_gradient_is_that_of_the_weighted_sum():
    model, out, target = two_heads_batch()
    loss = aligned_loss(weights={"class": 0.5}).double()
    components = loss.components(out, target)
    total = loss.total(components)
    factors = loss.learned.factors()
    assert not factors.requires_grad
    weighted = loss.weighted_terms(components)
    torch.testing.assert_close(weighted["class"], factors[1] * 0.5 * components["class"])
    assert loss.varying_weights()["class"].item() == pytest.approx(0.5 * factors[1].item())
    expected = factors[0] * components["value"] + 0.5 * factors[1] * components["class"]
    params = list(model.parameters())
    for got, want in zip(
        torch.autograd.grad(total, params, retain_graph=True),
        torch.autograd.grad(expected, params),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert loss._shared_value is None  # the graph is not kept past the total


def test_validation_and_epoch_totals_use_the_last_training_batch_s_factors():
    model, out, target = two_heads_batch()
    loss = aligned_loss().double()
    assert loss.learned.factors().tolist() == [1.0, 1.0]  # before any training batch
    loss.total(loss.components(out, target))
    trained = loss.learned.factors().clone()
    with torch.no_grad():
        x = dataset(12).tensors[0]
        loss.total(loss.components(model(x[:5]), {k: v[:5] for k, v in target.items()}))
    means = {"value": torch.tensor(2.0), "class": torch.tensor(1.0)}
    assert loss.total(means).item() == pytest.approx(float(2 * trained[0] + trained[1]))
    torch.testing.assert_close(loss.learned.factors(), trained)


def test_bf16_autocast_gives_a_float32_gram_and_weights_close_to_float32():
    model, out, target = two_heads_batch(torch.float32)
    x = dataset(12, torch.float32).tensors[0]
    full = aligned_loss()
    full.total(full.components(out, target))
    mixed = aligned_loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(x)
        assert out16["features"].dtype == torch.bfloat16
        components = mixed.components(out16, target)
        values = torch.stack([components[name] for name in mixed.names])
        assert shared_gram("aligned_mtl", values, out16["features"]).dtype == torch.float32
        mixed.total(components)
    got = mixed.learned.factors()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, full.learned.factors(), rtol=0.05, atol=0.0)


def test_a_model_term_off_the_features_keeps_factor_one():
    model, out, target = two_heads_batch()
    loss = CompositeLoss(
        {"value": MSELoss(), "class": L1Loss()},
        inputs={"value": ROUTES["value"], "class": {"pred": "value", "target": "value"}},
        weighting="aligned_mtl",
        shared="features",
        model_terms=["decay"],
    ).double()
    components = loss.components(out, target)
    components["decay"] = 1e-3 * model.class_head.weight.square().sum()  # not through z
    loss.total(components)
    factors = loss.learned.factors()
    assert factors[2].item() == 1.0 and factors[0].item() != pytest.approx(1.0)


def test_other_weightings_accept_and_ignore_shared():
    _, out, target = two_heads_batch()
    for weighting in ("fixed", "dwa", "uncertainty"):
        loss = CompositeLoss(
            {"value": MSELoss(), "class": MSELoss()},
            inputs={"value": ROUTES["value"], "class": ROUTES["value"]},
            weighting=weighting,
            shared="no such output",
        ).double()
        assert torch.isfinite(loss(out, target))


# -- errors ---------------------------------------------------------------------------------


def test_aligned_mtl_without_shared_is_refused_when_built():
    message = (
        r"composite: weighting='aligned_mtl' needs option 'shared', the key \(or index\) of the "
        r"model output holding the shared representation every head reads"
    )
    with pytest.raises(ValueError, match=message):
        CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weighting="aligned_mtl")


@pytest.mark.parametrize("bad", [True, 1.5, ["features"]])
def test_shared_must_be_a_key_or_an_index(bad):
    with pytest.raises(TypeError, match=r"composite: option 'shared' must be a key \(str\), an"):
        CompositeLoss({"a": MSELoss()}, weighting="aligned_mtl", shared=bad)


@pytest.mark.parametrize("grad", [True, False])  # training, and validation's first batch
def test_shared_naming_no_output_says_what_there_is(grad):
    _, out, target = two_heads_batch()
    loss = aligned_loss()
    loss.shared = "feature"
    message = (
        r"composite: weighting 'aligned_mtl' reads pred\['feature'\] \(option 'shared'\), "
        r"but its keys are \['value', 'logits', 'features'\]"
    )
    with torch.set_grad_enabled(grad), pytest.raises(ValueError, match=message):
        loss.components(out, target)


def test_shared_on_a_single_tensor_output_is_refused():
    loss = CompositeLoss({"a": MSELoss()}, weighting="aligned_mtl", shared=0)
    message = r"reads pred\[0\] \(option 'shared'\), but it is a single Tensor"
    with pytest.raises(ValueError, match=message):
        loss.components(torch.zeros(3, requires_grad=True), torch.zeros(3))


def test_a_detached_shared_output_is_refused():
    model, _, target = two_heads_batch()
    out = model(dataset(12).tensors[0])
    out["features"] = out["features"].detach()
    loss = aligned_loss()
    message = r"differentiates the terms on pred\['features'\] \(option 'shared'\), but got a"
    with pytest.raises(ValueError, match=message):
        loss.total(loss.components(out, target))


def test_a_copy_of_the_features_that_no_head_reads_is_refused():
    model, _, target = two_heads_batch()
    out = model(dataset(12).tensors[0])
    out["features"] = out["features"] * 1.0  # a new tensor: the heads read the original
    loss = aligned_loss()
    with pytest.raises(ValueError, match=r"aligned_mtl: no term depends on the shared representat"):
        loss.total(loss.components(out, target))


def test_a_training_total_needs_the_terms_from_components_first():
    _, out, target = two_heads_batch()
    components = aligned_loss().components(out, target)  # another instance kept the features
    with pytest.raises(ValueError, match=r"but got none kept \(compute the terms with components"):
        aligned_loss().total(components)
    loss = aligned_loss()
    partial = loss.components(out, target)
    del partial["class"]
    with pytest.raises(ValueError, match=r"needs every term of a training batch.*\['class'\]"):
        loss.total(partial)


def test_observe_takes_the_terms_stacked():
    z = torch.randn(4, 2, requires_grad=True)
    values = (z.sum(dim=0) ** 2).exp()  # a (2,) tensor, but not a stack of two terms
    with pytest.raises(ValueError, match=r"aligned_mtl: observe\(\) differentiates each term"):
        AlignedMTL(2).observe(values, z)
    with pytest.raises(ValueError, match=r"observe\(\) needs the batch's shared representation"):
        AlignedMTL(2).observe(torch.stack([z.sum(), z.mean()]), None)
