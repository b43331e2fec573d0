"""CompositeLoss: named terms, fixed weights, routing, total formed once from the components."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossplug.composite import CompositeLoss, Route
from lossplug.losses import (
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    TripletLoss,
)
from lossplug.registry import UnknownLossError, build_loss


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)


def test_components_are_the_unweighted_terms_and_the_total_is_their_weighted_sum():
    pred, target = data()
    loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"mse": 2.0, "l1": 0.5})
    components = loss.components(pred, target)
    assert list(components) == ["mse", "l1"]
    torch.testing.assert_close(components["mse"], F.mse_loss(pred, target))
    torch.testing.assert_close(components["l1"], F.l1_loss(pred, target))
    expected = 2.0 * F.mse_loss(pred, target) + 0.5 * F.l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)
    torch.testing.assert_close(loss.total(components), expected)
    assert loss.varying_weights() == {}  # constant weights are not logged


def test_fixed_weight_gradients_are_those_of_the_weighted_sum():
    pred, target = (t.double() for t in data())
    pred.requires_grad_(True)
    loss = CompositeLoss({"mse": MSELoss(), "huber": HuberLoss(delta=0.3)}, weights={"mse": 0.7})
    (got,) = torch.autograd.grad(loss(pred, target), pred)
    by_hand = 0.7 * F.mse_loss(pred, target) + F.huber_loss(pred, target, delta=0.3)
    (expected,) = torch.autograd.grad(by_hand, pred)
    torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,))


def test_weighted_terms_are_what_the_total_adds_up():
    pred, target = data()
    loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"mse": 2.0, "l1": 0.25})
    components = loss.components(pred, target)
    weighted = loss.weighted_terms(components)
    torch.testing.assert_close(weighted["mse"], 2.0 * components["mse"])
    torch.testing.assert_close(weighted["l1"], 0.25 * components["l1"])
    torch.testing.assert_close(loss.total(components), weighted["mse"] + weighted["l1"])


def test_total_of_epoch_means_is_their_weighted_sum():
    loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"mse": 2.0, "l1": 0.25})
    means = {"mse": torch.tensor(0.5), "l1": torch.tensor(4.0)}
    torch.testing.assert_close(loss.total(means), torch.tensor(2.0))


def test_missing_weights_are_one_and_callables_are_wrapped():
    pred, target = data()
    loss = CompositeLoss({"huber": HuberLoss(delta=0.5), "smooth": F.smooth_l1_loss})
    assert loss.weights == {"huber": 1.0, "smooth": 1.0}
    expected = F.huber_loss(pred, target, delta=0.5) + F.smooth_l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)


def test_a_single_loss_total_is_the_sum_of_its_components():
    pred, target = data()
    torch.testing.assert_close(
        MSELoss().total({"a": torch.tensor(1.5), "b": torch.tensor(2.0)}), torch.tensor(3.5)
    )
    torch.testing.assert_close(
        MSELoss().total(MSELoss().components(pred, target)), F.mse_loss(pred, target)
    )


def test_dice_plus_cross_entropy_on_segmentation_logits():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5), generator=generator)
    loss = CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()}, weights={"dice": 0.5})
    assert loss.input_space == "logits"
    components = loss.components(logits, target)
    torch.testing.assert_close(components["ce"], F.cross_entropy(logits, target))
    total = loss.total(components)
    torch.testing.assert_close(total, 0.5 * components["dice"] + components["ce"])
    total.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_weights_must_be_finite_and_non_negative(bad):
    with pytest.raises(
        ValueError, match=r"composite: option 'weights\.l1' must be a finite number >= 0"
    ):
        CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"l1": bad})


def test_a_weight_for_no_term_is_an_error_naming_the_terms():
    with pytest.raises(
        ValueError, match=r"\['dise'\], which are not terms; the terms are \['ce', 'dice'\]"
    ):
        CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()}, weights={"dise": 0.5})


def test_terms_expecting_different_inputs_are_refused():
    with pytest.raises(ValueError, match="the same 'pred' expect different inputs"):
        CompositeLoss({"dice": DiceLoss(input="probs"), "ce": CrossEntropyLoss()})
    with pytest.raises(ValueError, match=r"reading pred\['seg'\] expect different inputs"):
        CompositeLoss(
            {"dice": DiceLoss(input="probs"), "ce": CrossEntropyLoss()},
            inputs={"dice": {"pred": "seg"}, "ce": {"pred": "seg"}},
        )


def test_no_terms_is_an_error():
    with pytest.raises(ValueError, match="at least one loss"):
        CompositeLoss({})


def test_registered_as_composite():
    loss = build_loss("composite", terms={"mse": MSELoss()}, weights={"mse": 3.0})
    assert isinstance(loss, CompositeLoss)
    assert "weights={'mse': 3.0}, weighting='fixed'" in repr(loss)


# -- routing --------------------------------------------------------------------------------


def two_heads(generator_seed: int = 2):
    generator = torch.Generator().manual_seed(generator_seed)
    seg = torch.randn(2, 3, 4, 4, generator=generator, requires_grad=True)
    aux = torch.randn(2, 5, generator=generator, requires_grad=True)
    seg_target = torch.randint(0, 3, (2, 4, 4), generator=generator)
    aux_target = torch.randint(0, 5, (2,), generator=generator)
    return seg, aux, seg_target, aux_target


def test_terms_read_their_head_by_key_or_index():
    seg, aux, seg_target, aux_target = two_heads()
    expected = {
        "ce": F.cross_entropy(seg, seg_target),
        "aux": F.cross_entropy(aux, aux_target),
    }
    by_key = CompositeLoss(
        {"ce": CrossEntropyLoss(), "aux": CrossEntropyLoss()},
        weights={"aux": 0.4},
        inputs={"ce": {"pred": "seg", "target": "seg"}, "aux": {"pred": "aux", "target": "aux"}},
    )
    components = by_key.components({"seg": seg, "aux": aux}, {"seg": seg_target, "aux": aux_target})
    by_index = CompositeLoss(
        {"ce": CrossEntropyLoss(), "aux": CrossEntropyLoss()},
        weights={"aux": 0.4},
        inputs={"ce": Route(pred=0, target=0), "aux": Route(pred=1, target=-1)},
    )
    indexed = by_index.components((seg, aux), [seg_target, aux_target])
    for got in (components, indexed):
        assert list(got) == ["ce", "aux"]
        torch.testing.assert_close(got, expected)
    total = by_index((seg, aux), [seg_target, aux_target])
    torch.testing.assert_close(total, expected["ce"] + 0.4 * expected["aux"])
    total.backward()
    assert aux.grad is not None and seg.grad is not None


def test_a_route_may_read_one_head_and_the_whole_target():
    seg, aux, seg_target, _ = two_heads()
    loss = CompositeLoss({"ce": CrossEntropyLoss()}, inputs={"ce": {"pred": 0}})
    torch.testing.assert_close(loss((seg, aux), seg_target), F.cross_entropy(seg, seg_target))


def test_activations_let_dice_read_probabilities_of_the_logits_ce_reads():
    seg, _, seg_target, _ = two_heads()
    loss = CompositeLoss(
        {"dice": DiceLoss(input="probs"), "ce": CrossEntropyLoss()},
        inputs={"dice": {"activation": "softmax"}},
    )
    assert loss.input_space == "logits"
    components = loss.components(seg, seg_target)
    torch.testing.assert_close(components["dice"], DiceLoss()(seg, seg_target))
    torch.testing.assert_close(components["ce"], F.cross_entropy(seg, seg_target))


@pytest.mark.parametrize(
    ("activation", "term", "reference"),
    [
        (
            "sigmoid",
            BCELoss(input="probs"),
            lambda x, y: F.binary_cross_entropy(torch.sigmoid(x), y),
        ),
        (
            "log_softmax",
            KLDivLoss(reduction="batchmean"),
            lambda x, y: F.kl_div(F.log_softmax(x, dim=1), y, reduction="batchmean"),
        ),
    ],
)
def test_sigmoid_and_log_softmax_routes(activation, term, reference):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, generator=generator)
    target = torch.softmax(torch.randn(4, 3, generator=generator), dim=1)
    loss = CompositeLoss({"t": term}, inputs={"t": {"activation": activation}})
    assert loss.input_space == "logits"
    torch.testing.assert_close(loss(logits, target), reference(logits, target))


def test_heads_of_different_spaces_do_not_clash():
    loss = CompositeLoss(
        {"ce": CrossEntropyLoss(), "triplet": TripletLoss()},
        inputs={"ce": {"pred": "logits"}, "triplet": {"pred": "embeddings"}},
    )
    assert loss.input_space == "values"  # the whole output is a dict: nothing to convert


@pytest.mark.parametrize(
    ("pred", "route", "message"),
    [
        (
            {"seg": 0, "aux": 1},
            {"pred": "edges"},
            "composite: term 'aux' reads pred['edges'] (option 'inputs.aux.pred'), but its "
            "keys are ['seg', 'aux']",
        ),
        (
            (0, 1),
            {"pred": 2},
            "term 'aux' reads pred[2] (option 'inputs.aux.pred'), but it has 2 entries "
            "(indices 0 to 1)",
        ),
        (
            (0, 1),
            {"pred": "aux"},
            "term 'aux' reads pred['aux'] (option 'inputs.aux.pred'), but it has 2 entries",
        ),
        (
            torch.zeros(2, 5),
            {"pred": 1},
            "term 'aux' reads pred[1] (option 'inputs.aux.pred'), but it is a single Tensor, "
            "not a dict, tuple or list",
        ),
    ],
)
def test_a_route_to_a_missing_head_names_the_term_key_and_what_there_is(pred, route, message):
    loss = CompositeLoss({"aux": CrossEntropyLoss()}, inputs={"aux": route})
    with pytest.raises(ValueError) as info:
        loss(pred, torch.zeros(2, dtype=torch.long))
    assert message in str(info.value)


def test_a_route_to_a_missing_target_entry_names_the_target():
    _, aux, _, aux_target = two_heads()
    loss = CompositeLoss({"aux": CrossEntropyLoss()}, inputs={"aux": {"target": "aux"}})
    with pytest.raises(ValueError, match=r"reads target\['aux'\] .* its keys are \['seg'\]"):
        loss(aux, {"seg": aux_target})


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (
            {"dise": {"pred": 0}},
            ValueError,
            "option 'inputs' names ['dise'], which are not terms; the terms are ['ce', 'dice']",
        ),
        (
            {"dice": {"head": 0}},
            ValueError,
            "option 'inputs.dice': unknown option 'head'; valid options: pred, target, activation",
        ),
        (
            {"dice": {"activation": "relu"}},
            ValueError,
            "option 'inputs.dice.activation' must be one of 'softmax', 'sigmoid', "
            "'log_softmax', None, got 'relu'",
        ),
        (
            {"dice": {"activation": "softmax"}},
            ValueError,
            "option 'inputs.dice.activation' is 'softmax', which gives probs, but term 'dice' "
            "expects logits",
        ),
        ({"dice": {"pred": 1.5}}, TypeError, "option 'inputs.dice.pred' must be a key (str)"),
        ({"dice": 1}, TypeError, "option 'inputs.dice' must be a mapping"),
    ],
)
def test_bad_routes_are_refused_when_built(inputs, error, message):
    with pytest.raises(error) as info:
        CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()}, inputs=inputs)
    assert message in str(info.value)


def test_measured_components_count_per_term_on_its_route():
    seg, aux, seg_target, aux_target = two_heads()
    seg_target[0, 0, :3] = -1  # 3 ignored pixels
    loss = CompositeLoss(
        {"ce": CrossEntropyLoss(ignore_index=-1), "aux": CrossEntropyLoss()},
        inputs={"ce": {"pred": 0, "target": 0}, "aux": {"pred": 1, "target": 1}},
    )
    values, counts = loss.measured_components((seg, aux), (seg_target, aux_target))
    assert int(counts["ce"]) == seg_target.numel() - 3
    assert int(counts["aux"]) == 2
    torch.testing.assert_close(values["ce"], F.cross_entropy(seg, seg_target, ignore_index=-1))
    torch.testing.assert_close(values["aux"], F.cross_entropy(aux, aux_target))


def test_terms_may_be_registered_names_and_an_unknown_one_names_the_term():
    loss = CompositeLoss({"dice": "dice", "ce": "cross_entropy"}, weights={"ce": 0.5})
    assert isinstance(loss.terms["dice"], DiceLoss)
    with pytest.raises(UnknownLossError) as info:
        CompositeLoss({"dice": "dyce", "ce": "cross_entropy"})
    message = str(info.value)
    assert message.startswith("composite: option 'terms.dice': unknown loss 'dyce'.")
    assert "Did you mean 'dice'?" in message
