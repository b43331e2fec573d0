"""Metric-learning losses: brute-force loops, torch and pytorch-metric-learning agree.

Contrastive, triplet, InfoNCE (NT-Xent) and SupCon; the temperature-scaled two against PML's
``NTXentLoss`` and ``SupConLoss`` (cosine similarity, PML's default for both) and against the
formulas written out anchor by anchor in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.distances import LpDistance

from lossplug import value_checks
from lossplug.functional._distance import (
    cosine_similarities,
    paired_distances,
    pairwise_distances,
)
from lossplug.functional.metric_learning import (
    contrastive,
    contrastive_components,
    infonce,
    infonce_components,
    infonce_pair_count,
    supcon,
    supcon_anchor_count,
    supcon_components,
    triplet,
    triplet_margin,
)
from lossplug.losses.metric_learning import ContrastiveLoss, InfoNCELoss, SupConLoss, TripletLoss
from lossplug.losses.temperature import LearnedTemperature
from lossplug.optim import ParamGroupOptions, param_groups
from lossplug.registry import build_loss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 3])  # class 3 has no positive
DISTANCE_OPTIONS = [("euclidean", 2.0), ("euclidean", 1.0), ("euclidean", 3.0), ("cosine", 2.0)]


def embeddings(batch=9, dim=4, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=generator, dtype=dtype)


def clustered_embeddings(seed=22):
    """One noisy cluster per label of LABELS: some triplets active, some not, for every option."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    return centers[LABELS] + 0.6 * torch.randn(9, 4, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------- brute-force references
def ref_distance(a, b, distance, p=2.0):
    if distance == "cosine":
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm_a = math.sqrt(sum(x * x for x in a))
        norm_b = math.sqrt(sum(y * y for y in b))
        return 1.0 - dot / (norm_a * norm_b)
    return sum(abs(x - y) ** p for x, y in zip(a, b, strict=True)) ** (1.0 / p)


def ref_contrastive_pairs(emb, labels, pos_margin, neg_margin, distance, squared):
    """Per pair i < j (row-major): (pos term, neg term, is_positive)."""
    emb, labels = emb.tolist(), labels.tolist()
    pairs = []
    for i in range(len(emb)):
        for j in range(i + 1, len(emb)):
            d = ref_distance(emb[i], emb[j], distance)
            same = labels[i] == labels[j]
            hinge = max(0.0, d - pos_margin) if same else max(0.0, neg_margin - d)
            value = 0.5 * hinge**2 if squared else hinge
            pairs.append((value if same else 0.0, 0.0 if same else value, same))
    return pairs


def ref_contrastive(emb, labels, pos_margin, neg_margin, distance, squared, reduction):
    pairs = ref_contrastive_pairs(emb, labels, pos_margin, neg_margin, distance, squared)
    if reduction == "none":
        return [pos for pos, _, _ in pairs], [neg for _, neg, _ in pairs]
    pos = [p for p, _, same in pairs if same]
    neg = [n for _, n, same in pairs if not same]
    if reduction == "sum":
        return sum(pos), sum(neg)
    return (sum(pos) / len(pos) if pos else 0.0), (sum(neg) / len(neg) if neg else 0.0)


def ref_triplet_losses(emb, labels, margin, mining, distance, p):
    emb, labels = emb.tolist(), labels.tolist()
    n = len(emb)

    def d(i, j):
        return ref_distance(emb[i], emb[j], distance, p)

    losses = []
    for a in range(n):
        positives = [q for q in range(n) if q != a and labels[q] == labels[a]]
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        if mining == "all":
            losses += [max(0.0, d(a, q) - d(a, r) + margin) for q in positives for r in negatives]
        elif positives and negatives:
            hardest_pos = max(d(a, q) for q in positives)
            hardest_neg = min(d(a, r) for r in negatives)
            losses.append(max(0.0, hardest_pos - hardest_neg + margin))
    return losses


def ref_reduce_active(losses, reduction):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return sum(losses)
    active = [value for value in losses if value > 0]
    return sum(active) / len(active) if active else 0.0


def ref_infonce_terms(emb, labels, temperature):
    """Per positive pair (a, p), row-major, whose anchor has a negative: (pos, neg, loss)."""
    emb, labels = emb.tolist(), labels.tolist()
    terms = []
    for a in range(len(emb)):

        def s(k, a=a):
            return (1.0 - ref_distance(emb[a], emb[k], "cosine")) / temperature

        negatives = [n for n in range(len(emb)) if labels[n] != labels[a]]
        for p in range(len(emb)):
            if p == a or labels[p] != labels[a] or not negatives:
                continue
            denominator = math.exp(s(p)) + sum(math.exp(s(n)) for n in negatives)
            loss = -math.log(math.exp(s(p)) / denominator)
            terms.append((-s(p), math.log(denominator), loss))
    return terms


def ref_supcon_terms(emb, labels, temperature):
    """Per anchor with a positive and a negative, in batch order: (pos, neg, loss)."""
    emb, labels = emb.tolist(), labels.tolist()
    terms = []
    for i in range(len(emb)):

        def s(k, i=i):
            return (1.0 - ref_distance(emb[i], emb[k], "cosine")) / temperature

        others = [k for k in range(len(emb)) if k != i]
        positives = [k for k in others if labels[k] == labels[i]]
        if not positives or len(positives) == len(others):
            continue
        denominator = sum(math.exp(s(k)) for k in others)
        loss = -sum(math.log(math.exp(s(p)) / denominator) for p in positives) / len(positives)
        terms.append((-sum(s(p) for p in positives) / len(positives), math.log(denominator), loss))
    return terms


def ref_reduce(values, reduction):
    if reduction == "none":
        return values
    if reduction == "sum":
        return sum(values)
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------- distances
@pytest.mark.parametrize(("distance", "p"), DISTANCE_OPTIONS)
def test_pairwise_distances_match_loops(distance, p):
    emb = embeddings(6, 3)
    expected = [[ref_distance(a, b, distance, p) for b in emb.tolist()] for a in emb.tolist()]
    result = pairwise_distances(emb, distance, p)
    torch.testing.assert_close(result, torch.tensor(expected, dtype=torch.float64))
    assert (result.diagonal() == 0).all()


@pytest.mark.parametrize(("distance", "p"), DISTANCE_OPTIONS)
def test_paired_distances_match_loops(distance, p):
    first, second = embeddings(5, 3, seed=1), embeddings(5, 3, seed=2)
    expected = [
        ref_distance(a, b, distance, p)
        for a, b in zip(first.tolist(), second.tolist(), strict=True)
    ]
    result = paired_distances(first, second, distance, p)
    torch.testing.assert_close(result, torch.tensor(expected, dtype=torch.float64))


def test_float32_distances_are_accurate():
    emb = embeddings(8, 16, dtype=torch.float32)
    expected = torch.cdist(emb.double(), emb.double())
    torch.testing.assert_close(pairwise_distances(emb).double(), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- contrastive: values
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(0.0, 1.0), (0.3, 2.5)])
def test_contrastive_matches_loops(distance, squared, reduction, pos_margin, neg_margin):
    emb = embeddings()
    options = {
        "pos_margin": pos_margin,
        "neg_margin": neg_margin,
        "distance": distance,
        "squared": squared,
        "reduction": reduction,
    }
    pos, neg = ref_contrastive(emb, LABELS, pos_margin, neg_margin, distance, squared, reduction)
    expected_pos = torch.tensor(pos, dtype=torch.float64)
    expected_neg = torch.tensor(neg, dtype=torch.float64)
    parts = contrastive_components(emb, LABELS, **options)
    assert set(parts) == {"pos", "neg"}
    torch.testing.assert_close(parts["pos"], expected_pos)
    torch.testing.assert_close(parts["neg"], expected_neg)
    torch.testing.assert_close(contrastive(emb, LABELS, **options), expected_pos + expected_neg)
    assert float(expected_pos.sum()) > 0 and float(expected_neg.sum()) > 0  # both terms tested


def test_contrastive_squared_is_hadsell_equation_4():
    # L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2, Y = 1 for dissimilar pairs, one pair each
    pair = torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=torch.float64)  # D = 0.5
    similar = contrastive(pair, torch.tensor([1, 1]), neg_margin=2.0)
    dissimilar = contrastive(pair, torch.tensor([1, 2]), neg_margin=2.0)
    assert similar.item() == pytest.approx(0.5 * 0.5**2)
    assert dissimilar.item() == pytest.approx(0.5 * (2.0 - 0.5) ** 2)


@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(0.0, 1.0), (0.2, 2.0), (0.5, 3.0)])
def test_contrastive_unsquared_matches_pml_mean_reducer(pos_margin, neg_margin):
    # PML's MeanReducer averages pos and neg pairs separately and adds them; it counts each
    # pair twice, (i, j) and (j, i), which leaves the means unchanged.
    emb = embeddings(12, 5, seed=3)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 0, 4])
    pml = pml_losses.ContrastiveLoss(
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=LpDistance(normalize_embeddings=False),
        reducer=pml_reducers.MeanReducer(),
    )
    ours = contrastive(emb, labels, pos_margin=pos_margin, neg_margin=neg_margin, squared=False)
    torch.testing.assert_close(ours, pml(emb, labels))


def test_contrastive_without_positive_or_negative_pairs_is_zero_not_nan():
    emb = embeddings(4, 3).requires_grad_()
    no_positives = contrastive_components(emb, torch.tensor([0, 1, 2, 3]), neg_margin=5.0)
    no_negatives = contrastive_components(emb, torch.tensor([5, 5, 5, 5]))
    assert no_positives["pos"].item() == 0.0 and no_positives["neg"].item() > 0
    assert no_negatives["neg"].item() == 0.0 and no_negatives["pos"].item() > 0
    for term in (no_positives["pos"], no_negatives["neg"]):
        (grad,) = torch.autograd.grad(term, emb)
        assert (grad == 0).all()


def test_contrastive_single_sample_is_zero_with_graph():
    emb = embeddings(1, 3).requires_grad_()
    loss = ContrastiveLoss()(emb, torch.tensor([0]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (emb.grad == 0).all()


def test_contrastive_satisfied_margins_give_exact_zero():
    emb = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.0, 0.1]], requires_grad=True)
    loss = contrastive(emb, torch.tensor([0, 0, 1, 1]), pos_margin=0.5, neg_margin=1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert (emb.grad == 0).all()


# ---------------------------------------------------------------- triplet: values
@pytest.mark.parametrize("mining", ["all", "batch_hard"])
@pytest.mark.parametrize(("distance", "p"), DISTANCE_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.0])
def test_triplet_matches_loops(mining, distance, p, reduction, margin):
    emb = clustered_embeddings()
    losses = ref_triplet_losses(emb, LABELS, margin, mining, distance, p)
    assert any(value > 0 for value in losses) and any(value == 0 for value in losses)
    expected = torch.tensor(ref_reduce_active(losses, reduction), dtype=torch.float64)
    result = triplet(
        emb, LABELS, margin=margin, mining=mining, distance=distance, p=p, reduction=reduction
    )
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("margin", [0.05, 0.5, 1.0])
def test_triplet_all_matches_pml(margin):
    # PML's default reducer, AvgNonZeroReducer, is our "mean over active triplets".
    emb = embeddings(12, 5, seed=4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 0, 4])
    distance = LpDistance(normalize_embeddings=False)
    pml = pml_losses.TripletMarginLoss(margin=margin, triplets_per_anchor="all", distance=distance)
    torch.testing.assert_close(triplet(emb, labels, margin=margin), pml(emb, labels))
    # Per-triplet values in the same (a, p, n) row-major order as PML's torch.where.
    pml.reducer = pml_reducers.DoNothingReducer()
    per_triplet = pml(emb, labels)["loss"]["losses"]
    torch.testing.assert_close(triplet(emb, labels, margin=margin, reduction="none"), per_triplet)


@pytest.mark.parametrize("margin", [0.05, 0.5, 1.0])
def test_triplet_batch_hard_matches_pml_batch_hard_miner(margin):
    emb = embeddings(12, 5, seed=5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 0, 4])
    distance = LpDistance(normalize_embeddings=False)
    mined = pml_miners.BatchHardMiner(distance=distance)(emb, labels)
    pml = pml_losses.TripletMarginLoss(margin=margin, distance=distance)
    ours = triplet(emb, labels, margin=margin, mining="batch_hard")
    torch.testing.assert_close(ours, pml(emb, labels, mined))
    pml.reducer = pml_reducers.DoNothingReducer()
    per_anchor = pml(emb, labels, mined)["loss"]["losses"]
    ours_none = triplet(emb, labels, margin=margin, mining="batch_hard", reduction="none")
    torch.testing.assert_close(ours_none, per_anchor)


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
def test_no_active_triplet_gives_exact_zero_and_zero_grads(mining):
    emb = torch.tensor(
        [[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.0, 0.1], [0.0, 10.0], [0.1, 10.0]],
        requires_grad=True,
    )
    loss = triplet(emb, torch.tensor([0, 0, 1, 1, 2, 2]), margin=0.2, mining=mining)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(emb.grad).all() and (emb.grad == 0).all()


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [7, 7, 7, 7]], ids=["distinct", "one_class"])
def test_no_valid_triplet_gives_zero_not_nan(mining, labels):
    emb = embeddings(4, 3).requires_grad_()
    labels = torch.tensor(labels)
    for reduction in ("mean", "sum"):
        loss = triplet(emb, labels, mining=mining, reduction=reduction)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, emb)
        assert (grad == 0).all()
    assert triplet(emb, labels, mining=mining, reduction="none").shape == (0,)


# ---------------------------------------------------------------- triplet_margin vs torch
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_triplet_margin_matches_torch(p, reduction):
    anchor, positive, negative = (embeddings(6, 4, seed=s) for s in (6, 7, 8))
    ours = triplet_margin(anchor, positive, negative, margin=1.0, p=p, reduction=reduction)
    # torch adds eps=1e-6 to every difference, which moves each distance by up to ~D * 1e-6
    torch_value = TF.triplet_margin_loss(
        anchor, positive, negative, margin=1.0, p=p, reduction=reduction
    )
    torch.testing.assert_close(ours, torch_value, atol=1e-4, rtol=0)
    exact = TF.triplet_margin_with_distance_loss(
        anchor,
        positive,
        negative,
        distance_function=lambda x, y: torch.linalg.vector_norm(x - y, ord=p, dim=-1),
        margin=1.0,
        reduction=reduction,
    )
    torch.testing.assert_close(ours, exact)


def test_triplet_margin_cosine_matches_torch_with_distance():
    anchor, positive, negative = (embeddings(6, 4, seed=s) for s in (9, 10, 11))
    expected = TF.triplet_margin_with_distance_loss(
        anchor,
        positive,
        negative,
        distance_function=lambda x, y: 1.0 - TF.cosine_similarity(x, y),
        margin=0.5,
    )
    ours = triplet_margin(anchor, positive, negative, margin=0.5, distance="cosine")
    torch.testing.assert_close(ours, expected)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize(("distance", "p"), DISTANCE_OPTIONS)
def test_duplicate_embeddings_give_finite_grads(distance, p):
    emb = embeddings(6, 3).repeat(2, 1)  # every embedding twice: distance 0 on and off diagonal
    emb.requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    for loss in (
        triplet(emb, labels, mining="all", distance=distance, p=p),
        triplet(emb, labels, mining="batch_hard", distance=distance, p=p),
        triplet_margin(emb, emb, emb.flip(0), distance=distance, p=p),
    ):
        (grad,) = torch.autograd.grad(loss, emb)
        assert torch.isfinite(grad).all()
    if p == 2.0:
        for squared in (True, False):
            loss = contrastive(emb, labels, pos_margin=0.0, distance=distance, squared=squared)
            (grad,) = torch.autograd.grad(loss, emb)
            assert torch.isfinite(grad).all()


def test_all_zero_embeddings_give_finite_grads():
    emb = torch.zeros(4, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = contrastive(emb, labels) + triplet(emb, labels) + triplet(emb, labels, distance="cosine")
    loss = loss + infonce(emb, labels) + supcon(emb, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("squared", [True, False])
def test_contrastive_gradcheck(distance, squared):
    emb = embeddings(5, 3, seed=12).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2])
    points = emb.detach().tolist()
    distances = [
        ref_distance(a, b, distance) for i, a in enumerate(points) for b in points[i + 1 :]
    ]
    assert all(abs(d - m) > 1e-3 for d in distances for m in (0.1, 1.0))  # away from the kinks

    def loss(x):
        return contrastive(
            x, labels, pos_margin=0.1, neg_margin=1.0, distance=distance, squared=squared
        )

    assert torch.autograd.gradcheck(loss, (emb,))


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
@pytest.mark.parametrize(("distance", "margin"), [("euclidean", 1.0), ("cosine", 0.3)])
def test_triplet_gradcheck(mining, distance, margin):
    emb = embeddings(6, 3, seed=13).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])

    def active(m):
        return [
            value > 0
            for value in ref_triplet_losses(emb.detach(), labels, m, mining, distance, 2.0)
        ]

    assert any(active(margin))
    assert active(margin - 1e-3) == active(margin + 1e-3)  # no triplet at the hinge's kink
    assert torch.autograd.gradcheck(
        lambda x: triplet(x, labels, margin=margin, mining=mining, distance=distance), (emb,)
    )


# ---------------------------------------------------------------- modules
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_module_equals_functional_and_components_sum(reduction):
    emb = embeddings()
    options = {"pos_margin": 0.1, "neg_margin": 2.0, "distance": "cosine", "squared": False}
    module = ContrastiveLoss(**options, reduction=reduction)
    parts = module.components(emb, LABELS)
    assert set(parts) == {"pos", "neg"}
    torch.testing.assert_close(module(emb, LABELS), parts["pos"] + parts["neg"])
    torch.testing.assert_close(
        module(emb, LABELS), contrastive(emb, LABELS, **options, reduction=reduction)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mining", ["all", "batch_hard"])
def test_triplet_module_equals_functional(reduction, mining):
    emb = embeddings()
    options = {"margin": 0.5, "mining": mining, "distance": "euclidean", "p": 1.0}
    module = TripletLoss(**options, reduction=reduction)
    expected = triplet(emb, LABELS, **options, reduction=reduction)
    torch.testing.assert_close(module(emb, LABELS), expected)
    components = module.components(emb, LABELS)
    assert list(components) == ["triplet"]
    torch.testing.assert_close(components["triplet"], expected)


def test_registry_builds_the_modules_with_options():
    contrastive_module = build_loss("contrastive", neg_margin=2.0, squared=False)
    triplet_module = build_loss("triplet", margin=0.3, mining="batch_hard")
    assert isinstance(contrastive_module, ContrastiveLoss)
    assert isinstance(triplet_module, TripletLoss)
    assert contrastive_module.input_space == triplet_module.input_space == "embeddings"
    assert "neg_margin=2.0" in repr(contrastive_module) and "squared=False" in repr(
        contrastive_module
    )
    assert "mining='batch_hard'" in repr(triplet_module) and "margin=0.3" in repr(triplet_module)


def test_reduction_none_shapes():
    emb = embeddings()  # B = 9; the one sample of class 3 has no positive
    batch = emb.shape[0]
    same = LABELS[:, None] == LABELS[None, :]
    valid_triplets = ((same.sum(1) - 1) * (~same).sum(1)).sum().item()
    assert ContrastiveLoss(reduction="none")(emb, LABELS).shape == (batch * (batch - 1) // 2,)
    assert TripletLoss(reduction="none")(emb, LABELS).shape == (valid_triplets,)
    assert TripletLoss(mining="batch_hard", reduction="none")(emb, LABELS).shape == (batch - 1,)


# ---------------------------------------------------------------- low precision
@pytest.mark.parametrize(
    "loss",
    [
        ContrastiveLoss(),
        TripletLoss(margin=0.5),
        TripletLoss(mining="batch_hard"),
        InfoNCELoss(),
        SupConLoss(),
    ],
    ids=repr,
)
def test_bf16_autocast_on_cpu_is_finite_and_close(loss):
    emb = embeddings(dtype=torch.float32).requires_grad_()
    reference = loss(emb, LABELS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_value = loss(emb, LABELS)
    (grad,) = torch.autograd.grad(autocast_value, emb)
    assert torch.isfinite(autocast_value) and torch.isfinite(grad).all()
    # Distances are computed in float32 even under autocast: same value up to float32 rounding.
    torch.testing.assert_close(autocast_value, reference, atol=1e-5, rtol=1e-5)
    # bf16 embeddings (e.g. a bf16 model's output): float32 distances of the rounded inputs;
    # bf16 keeps 8 bits of mantissa, so the loss is within ~2% of the float32 one.
    low = emb.detach().bfloat16().requires_grad_()
    low_value = loss(low, LABELS)
    low_value.backward()
    assert low_value.dtype == torch.float32 and torch.isfinite(low.grad).all()
    torch.testing.assert_close(low_value, reference.detach(), atol=1e-2, rtol=2e-2)


# ---------------------------------------------------------------- bad input
def _call_contrastive(**kwargs):
    return contrastive(**{"embeddings": embeddings(), "labels": LABELS, **kwargs})


def _call_triplet(**kwargs):
    return triplet(**{"embeddings": embeddings(), "labels": LABELS, **kwargs})


def _call_infonce(**kwargs):
    return infonce(**{"embeddings": embeddings(), "labels": LABELS, **kwargs})


def _call_supcon(**kwargs):
    return supcon(**{"embeddings": embeddings(), "labels": LABELS, **kwargs})


BAD_INPUTS = [
    ({"labels": LABELS.float()}, TypeError, "'labels' must be an integer tensor"),
    ({"labels": LABELS[:-1]}, ValueError, "'labels' must have shape \\(9,\\)"),
    ({"labels": LABELS[None]}, ValueError, "'labels' must have shape"),
    ({"embeddings": embeddings()[0]}, ValueError, "'embeddings' must have shape \\(B, D\\)"),
    ({"embeddings": torch.ones(9, 2, dtype=torch.long)}, TypeError, "'embeddings'"),
    ({"reduction": "mean_active"}, ValueError, "option 'reduction'"),
]


@pytest.mark.parametrize(
    "call",
    [_call_contrastive, _call_triplet, _call_infonce, _call_supcon],
    ids=["contrastive", "triplet", "infonce", "supcon"],
)
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_INPUTS)
def test_bad_inputs_name_the_loss_and_argument(call, kwargs, error, match):
    loss_name = call.__name__.removeprefix("_call_")
    with pytest.raises(error, match=f"^{loss_name}: .*{match}"):
        call(**kwargs)


@pytest.mark.parametrize(
    ("factory", "kwargs", "error", "match"),
    [
        (ContrastiveLoss, {"pos_margin": -0.1}, ValueError, "option 'pos_margin'"),
        (ContrastiveLoss, {"neg_margin": float("nan")}, ValueError, "option 'neg_margin'"),
        (
            ContrastiveLoss,
            {"pos_margin": 2.0, "neg_margin": 1.0},
            ValueError,
            "option 'neg_margin' must be >=",
        ),
        (ContrastiveLoss, {"squared": "yes"}, TypeError, "option 'squared'"),
        (ContrastiveLoss, {"distance": "l2"}, ValueError, "option 'distance'"),
        (ContrastiveLoss, {"reduction": "batchmean"}, ValueError, "option 'reduction'"),
        (TripletLoss, {"margin": -1.0}, ValueError, "option 'margin'"),
        (TripletLoss, {"margin": float("nan")}, ValueError, "option 'margin'"),
        (TripletLoss, {"margin": "0.2"}, TypeError, "option 'margin'"),
        (TripletLoss, {"mining": "semihard"}, ValueError, "option 'mining'"),
        (TripletLoss, {"distance": "l2"}, ValueError, "option 'distance'"),
        (TripletLoss, {"p": 0.5}, ValueError, "option 'p'"),
        (TripletLoss, {"distance": "cosine", "p": 1.0}, ValueError, "option 'p'"),
        (TripletLoss, {"reduction": "avg"}, ValueError, "option 'reduction'"),
        (InfoNCELoss, {"temperature": 0.0}, ValueError, "option 'temperature' must be .* > 0"),
        (InfoNCELoss, {"temperature": -0.1}, ValueError, "option 'temperature'"),
        (InfoNCELoss, {"temperature": float("inf")}, ValueError, "option 'temperature'"),
        (InfoNCELoss, {"temperature": "0.1"}, TypeError, "option 'temperature'"),
        (InfoNCELoss, {"learn_temperature": "yes"}, TypeError, "option 'learn_temperature'"),
        (
            InfoNCELoss,
            {"temperature": 0.005, "learn_temperature": True},
            ValueError,
            "option 'temperature' must be >= 0.01 with learn_temperature=true",
        ),
        (InfoNCELoss, {"reduction": "batchmean"}, ValueError, "option 'reduction'"),
        (SupConLoss, {"temperature": float("nan")}, ValueError, "option 'temperature'"),
        (SupConLoss, {"learn_temperature": 1}, TypeError, "option 'learn_temperature'"),
        (SupConLoss, {"reduction": "avg"}, ValueError, "option 'reduction'"),
    ],
)
def test_bad_options_fail_at_construction(factory, kwargs, error, match):
    with pytest.raises(error, match=f"^{factory.name}: {match}"):
        factory(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pos_margin": float("nan")}, ValueError, "option 'pos_margin'"),
        ({"neg_margin": -1.0}, ValueError, "option 'neg_margin'"),
        ({"distance": "manhattan"}, ValueError, "option 'distance'"),
    ],
)
def test_functional_contrastive_checks_options(kwargs, error, match):
    with pytest.raises(error, match=f"^contrastive: {match}"):
        _call_contrastive(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"margin": float("nan")}, ValueError, "option 'margin'"),
        ({"mining": "hard"}, ValueError, "option 'mining'"),
        ({"distance": "manhattan"}, ValueError, "option 'distance'"),
    ],
)
def test_functional_triplet_checks_options(kwargs, error, match):
    with pytest.raises(error, match=f"^triplet: {match}"):
        _call_triplet(**kwargs)


@pytest.mark.parametrize("call", [_call_infonce, _call_supcon], ids=["infonce", "supcon"])
@pytest.mark.parametrize(
    ("temperature", "error", "match"),
    [
        (0.0, ValueError, "option 'temperature' must be a finite number > 0.0, got 0.0"),
        (torch.tensor(0.0), ValueError, "'temperature' must be finite and > 0, got 0.0"),
        (torch.tensor(float("nan")), ValueError, "'temperature' must be finite and > 0"),
        (torch.tensor([0.1, 0.2]), ValueError, "'temperature' must be a number or a 0-d tensor"),
        (torch.tensor(1), TypeError, "'temperature' must be a floating-point tensor"),
    ],
)
def test_functional_temperature_losses_check_the_temperature(call, temperature, error, match):
    loss_name = call.__name__.removeprefix("_call_")
    with pytest.raises(error, match=f"^{loss_name}: {match}"):
        call(temperature=temperature)


def test_a_temperature_tensor_is_read_only_where_value_checks_apply():
    with value_checks(False):
        assert torch.isnan(_call_infonce(temperature=torch.tensor(float("nan"))))


def test_triplet_margin_checks_inputs():
    anchor = embeddings(4, 3)
    with pytest.raises(ValueError, match=r"^triplet_margin: 'negative' must have shape"):
        triplet_margin(anchor, anchor, anchor[:3])
    with pytest.raises(TypeError, match=r"^triplet_margin: 'positive'"):
        triplet_margin(anchor, anchor.long(), anchor)
    with pytest.raises(ValueError, match=r"^triplet_margin: option 'margin'"):
        triplet_margin(anchor, anchor, anchor, margin=-0.5)


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
def test_triplet_epoch_weight_is_the_number_of_active_triplets(mining):
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    loss = TripletLoss(margin=0.5, mining=mining)
    components, counts = loss.measured_components(embeddings, labels)
    per_triplet = triplet(embeddings, labels, margin=0.5, mining=mining, reduction="none")
    assert counts["triplet"].item() == int((per_triplet > 0).sum())
    torch.testing.assert_close(components["triplet"], loss(embeddings, labels))
    _, none_active = loss.measured_components(embeddings, torch.arange(10))
    assert none_active["triplet"].item() == 0  # all labels distinct: no triplet at all


# ---------------------------------------------------------------- InfoNCE and SupCon
TEMPERATURE_LOSSES = {
    "infonce": (infonce, infonce_components, ref_infonce_terms, pml_losses.NTXentLoss),
    "supcon": (supcon, supcon_components, ref_supcon_terms, pml_losses.SupConLoss),
}
PML_LABELS = {
    "classes": torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 0, 4]),  # 3 and 4 have no positive
    "two_views": torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]),  # SimCLR's batches
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
@pytest.mark.parametrize("name", TEMPERATURE_LOSSES)
def test_temperature_losses_match_loops(name, temperature, reduction):
    loss, components, reference, _ = TEMPERATURE_LOSSES[name]
    emb = embeddings()
    pos, neg, total = zip(*reference(emb, LABELS, temperature), strict=True)
    expected = {
        key: torch.tensor(ref_reduce(list(values), reduction), dtype=torch.float64)
        for key, values in (("pos", pos), ("neg", neg), ("loss", total))
    }
    parts = components(emb, LABELS, temperature=temperature, reduction=reduction)
    assert list(parts) == ["pos", "neg"]
    torch.testing.assert_close(parts["pos"], expected["pos"])
    torch.testing.assert_close(parts["neg"], expected["neg"])
    value = loss(emb, LABELS, temperature=temperature, reduction=reduction)
    torch.testing.assert_close(value, expected["loss"])
    torch.testing.assert_close(parts["pos"] + parts["neg"], value)


@pytest.mark.parametrize("labels", PML_LABELS.values(), ids=PML_LABELS)
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("name", TEMPERATURE_LOSSES)
def test_temperature_losses_match_pml_values_and_gradients(name, temperature, labels):
    loss, _, _, pml_loss = TEMPERATURE_LOSSES[name]
    emb = embeddings(12, 5, seed=4).requires_grad_()
    ours = loss(emb, labels, temperature=temperature)
    theirs = pml_loss(temperature=temperature)(emb, labels)  # cosine similarity by default
    torch.testing.assert_close(ours, theirs)
    (ours_grad,) = torch.autograd.grad(ours, emb)
    (theirs_grad,) = torch.autograd.grad(theirs, emb)
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.parametrize("labels", PML_LABELS.values(), ids=PML_LABELS)
def test_infonce_per_pair_matches_pml_in_its_order(labels):
    emb = embeddings(12, 5, seed=6)
    pml = pml_losses.NTXentLoss(temperature=0.2, reducer=pml_reducers.DoNothingReducer())
    per_pair = pml(emb, labels)["loss"]["losses"]  # positive pairs (a, p), row-major
    ours = infonce(emb, labels, temperature=0.2, reduction="none")
    torch.testing.assert_close(ours, per_pair)
    assert len(ours) == infonce_pair_count(labels).item()


def test_supcon_per_anchor_matches_pml_at_the_anchors_with_a_positive():
    emb, labels = embeddings(12, 5, seed=7), PML_LABELS["classes"]
    pml = pml_losses.SupConLoss(temperature=0.2, reducer=pml_reducers.DoNothingReducer())
    per_anchor = pml(emb, labels)["loss"]["losses"]  # 0 for anchors without a positive
    has_positive = (labels[:, None] == labels[None, :]).sum(dim=1) > 1
    ours = supcon(emb, labels, temperature=0.2, reduction="none")
    torch.testing.assert_close(ours, per_anchor[has_positive])
    assert (per_anchor[~has_positive] == 0).all()
    assert len(ours) == supcon_anchor_count(labels).item() == 10


def test_supcon_keeps_the_anchors_whose_loss_rounds_to_zero_which_pml_leaves_out():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    per_anchor = supcon(emb, labels, temperature=0.05, reduction="none")
    assert (per_anchor[:2] == 0).all() and (per_anchor[2:] > 0).all()  # float32 rounding
    torch.testing.assert_close(supcon(emb, labels, temperature=0.05), per_anchor.mean())
    pml = pml_losses.SupConLoss(temperature=0.05)(emb, labels)
    torch.testing.assert_close(pml, per_anchor[2:].mean())  # AvgNonZeroReducer


def test_infonce_on_two_views_is_simclr_cross_entropy():
    # SimCLR's NT-Xent: a cross-entropy over every other view, the partner view as the class
    emb, labels = embeddings(12, 5, seed=8), PML_LABELS["two_views"]
    logits = cosine_similarities(emb) / 0.5
    logits = logits.masked_fill(torch.eye(12, dtype=torch.bool), -torch.inf)
    partner = torch.arange(12).roll(6)
    expected = TF.cross_entropy(logits, partner)
    torch.testing.assert_close(infonce(emb, labels, temperature=0.5), expected)


def test_supcon_with_one_positive_per_anchor_is_infonce_with_every_other_sample():
    # one positive each: SupCon's denominator is InfoNCE's; they differ once |P(i)| > 1
    emb, labels = embeddings(12, 5, seed=9), PML_LABELS["two_views"]
    torch.testing.assert_close(supcon(emb, labels), infonce(emb, labels, temperature=0.1))
    emb, labels = embeddings(), LABELS
    assert not torch.isclose(supcon(emb, labels), infonce(emb, labels, temperature=0.1))


@pytest.mark.parametrize("name", TEMPERATURE_LOSSES)
@pytest.mark.parametrize(
    "labels", [[0, 1, 2, 3], [7, 7, 7, 7], [0]], ids=["no_positive", "no_negative", "single"]
)
def test_a_batch_without_positive_and_negative_pairs_is_zero_as_in_pml(name, labels):
    loss, components, _, pml_loss = TEMPERATURE_LOSSES[name]
    emb = embeddings(len(labels), 3).requires_grad_()
    labels = torch.tensor(labels)
    for reduction in ("mean", "sum"):
        parts = components(emb, labels, reduction=reduction)
        for term in parts.values():
            assert term.item() == 0.0
            (grad,) = torch.autograd.grad(term, emb, retain_graph=True)
            assert (grad == 0).all()
    assert loss(emb, labels).item() == pml_loss()(emb, labels).item() == 0.0
    assert loss(emb, labels, reduction="none").shape == (0,)
    assert infonce_pair_count(labels).item() == supcon_anchor_count(labels).item() == 0


@pytest.mark.parametrize("name", TEMPERATURE_LOSSES)
def test_temperature_losses_gradcheck_in_embeddings_and_temperature(name):
    loss = TEMPERATURE_LOSSES[name][0]
    emb = embeddings(6, 3, seed=13).requires_grad_()
    temperature = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda x, t: loss(x, labels, temperature=t), (emb, temperature))


@pytest.mark.parametrize("module", [InfoNCELoss, SupConLoss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_temperature_modules_equal_functionals_and_components_sum(module, reduction):
    loss, components, _, _ = TEMPERATURE_LOSSES[module.name]
    emb = embeddings()
    built = module(temperature=0.2, reduction=reduction)
    parts = built.components(emb, LABELS)
    assert set(parts) == set(built.component_names()) == {"pos", "neg"}
    expected = loss(emb, LABELS, temperature=0.2, reduction=reduction)
    torch.testing.assert_close(built(emb, LABELS), expected)
    torch.testing.assert_close(parts["pos"] + parts["neg"], expected)
    expected_parts = components(emb, LABELS, temperature=0.2, reduction=reduction)
    torch.testing.assert_close(parts, expected_parts)


@pytest.mark.parametrize("module", [InfoNCELoss, SupConLoss])
def test_temperature_losses_epoch_weight_is_their_pair_or_anchor_count(module):
    built = module()
    parts, counts = built.measured_components(embeddings(), LABELS)
    per_item = module(reduction="none")(embeddings(), LABELS)
    assert counts["pos"].item() == counts["neg"].item() == len(per_item)
    torch.testing.assert_close(parts["pos"] + parts["neg"], per_item.mean())
    _, none_counted = built.measured_components(embeddings(), torch.arange(9))
    assert none_counted["pos"].item() == none_counted["neg"].item() == 0


def test_temperature_losses_are_registered_with_their_options():
    infonce_module = build_loss("infonce", temperature=0.2, learn_temperature=True)
    supcon_module = build_loss("supcon", temperature=0.05)
    assert isinstance(infonce_module, InfoNCELoss) and isinstance(supcon_module, SupConLoss)
    assert infonce_module.input_space == supcon_module.input_space == "embeddings"
    assert "temperature=0.2, learn_temperature=True" in repr(infonce_module)
    assert "temperature=0.05, learn_temperature=False" in repr(supcon_module)
    assert list(supcon_module.parameters()) == []


# ---------------------------------------------------------------- learned temperature
@pytest.mark.parametrize("module", [InfoNCELoss, SupConLoss])
def test_a_learned_temperature_starts_at_the_option_and_gets_a_gradient(module):
    emb = embeddings()
    learned = module(temperature=0.2, learn_temperature=True)
    (parameter,) = learned.parameters()
    torch.testing.assert_close(learned(emb, LABELS), module(temperature=0.2)(emb, LABELS))
    learned(emb, LABELS).backward()
    # d loss / d logit_scale = d loss / d tau * d tau / d logit_scale = d loss / d tau * (-tau)
    temperature = learned.current_temperature().detach().double().requires_grad_()
    (grad_tau,) = torch.autograd.grad(
        TEMPERATURE_LOSSES[module.name][0](emb, LABELS, temperature=temperature), temperature
    )
    assert parameter.grad != 0
    torch.testing.assert_close(parameter.grad.double(), -grad_tau * temperature.detach())


def test_a_learned_temperature_is_stored_as_clip_logit_scale_and_clipped_at_100():
    learned = LearnedTemperature(0.07)
    torch.testing.assert_close(learned.logit_scale, torch.tensor(math.log(1 / 0.07)))
    torch.testing.assert_close(learned(), torch.tensor(0.07))
    with torch.no_grad():
        learned.logit_scale.fill_(math.log(100.0) + 1.0)
    assert learned().item() == pytest.approx(0.01)
    loss = InfoNCELoss(learn_temperature=True)
    loss.learned_temperature = learned
    loss(embeddings(), LABELS).backward()
    assert learned.logit_scale.grad == 0  # past the clip: no gradient, the logits' scale is 100


def test_a_learned_temperature_gets_no_weight_decay():
    model = torch.nn.ModuleDict(
        {"head": torch.nn.Linear(4, 2), "criterion": InfoNCELoss(learn_temperature=True)}
    )
    decay = {
        name: group["decay_mult"]
        for group in param_groups(model, ParamGroupOptions())
        for name, parameter in model.named_parameters()
        if any(parameter is member for member in group["params"])
    }
    assert decay == {
        "head.weight": 1.0,
        "head.bias": 0.0,
        "criterion.learned_temperature.logit_scale": 0.0,
    }
