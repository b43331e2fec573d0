"""Poly-1 cross-entropy's kernel gives the paper's two terms, their gradients and less memory.

The reference is Poly-1 as Leng et al. write it on torch's cross-entropy,
``ce + eps * (1 - exp(-ce))``, in float64 and with any incoming gradient of each term; peak
tensor memory is measured with torch's profiler.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import lossplug
from benchmarks.benchkit import loss_step_peak_memory
from lossplug import functional as LF
from lossplug.kernels.poly1_cross_entropy import poly1_cross_entropy_kernel

SHAPES = [(6, 5), (4, 3, 7)]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(shape, scale=3.0, dtype=torch.float64):
    logits = (torch.randn(shape, generator=seeded(0), dtype=dtype) * scale).requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=seeded(1))
    return logits, labels


def paper_terms(logits, labels, epsilon):
    """Torch's cross-entropy of each position and eps (1 - p_t) from it."""
    cross_entropy = TF.cross_entropy(logits, labels, reduction="none")
    return cross_entropy, epsilon * (1 - torch.exp(-cross_entropy))


def terms_and_grad(terms, logits, incoming):
    values = terms(logits)
    (grad,) = torch.autograd.grad(values, logits, incoming)
    return [value.detach() for value in values], grad


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("epsilon", [1.0, -1.0, 2.5])
def test_both_terms_and_the_gradient_for_any_incoming_gradients_are_the_papers(shape, epsilon):
    logits, labels = inputs(shape)
    incoming = [torch.randn(labels.shape, generator=seeded(s), dtype=logits.dtype) for s in (2, 3)]
    ours = terms_and_grad(
        lambda x: poly1_cross_entropy_kernel(x, labels, epsilon), logits, incoming
    )
    paper = terms_and_grad(lambda x: paper_terms(x, labels, epsilon), logits, incoming)
    for our_term, paper_term in zip(ours[0], paper[0], strict=True):
        torch.testing.assert_close(our_term, paper_term)
    torch.testing.assert_close(ours[1], paper[1])


def test_a_retained_graph_gives_the_same_gradient_twice_and_second_derivatives_are_torchs():
    logits, labels = inputs((5, 4, 3))
    direction = torch.randn(logits.shape, generator=seeded(7), dtype=logits.dtype)

    def total(loss):
        cross_entropy, poly = loss(logits)
        return (cross_entropy + 2 * poly).sum()

    ours = lambda x: poly1_cross_entropy_kernel(x, labels, 1.5)  # noqa: E731
    paper = lambda x: paper_terms(x, labels, 1.5)  # noqa: E731
    value = total(ours)
    (first,) = torch.autograd.grad(value, logits, retain_graph=True)
    (second,) = torch.autograd.grad(value, logits)
    (expected,) = torch.autograd.grad(total(paper), logits)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)

    def hessian_vector(loss):
        (grad,) = torch.autograd.grad(total(loss), logits, create_graph=True)
        (product,) = torch.autograd.grad((grad * direction).sum(), logits)
        return product

    torch.testing.assert_close(hessian_vector(ours), hessian_vector(paper))


def test_a_batch_of_incoming_gradients_gives_the_papers_jacobian():
    logits, labels = inputs((4, 6))

    def jacobian(loss):
        cross_entropy, poly = loss(logits)
        rows = torch.eye(2 * labels.numel(), dtype=logits.dtype)
        outputs = torch.cat([cross_entropy, poly])
        (grads,) = torch.autograd.grad(outputs, logits, rows, is_grads_batched=True)
        return grads

    ours = jacobian(lambda x: poly1_cross_entropy_kernel(x, labels, 0.7))
    torch.testing.assert_close(ours, jacobian(lambda x: paper_terms(x, labels, 0.7)))


def test_logits_of_hundreds_give_finite_exact_terms_and_gradients():
    """exp overflows at z = 89 in float32; the shift by the largest logit keeps it in range."""
    logits, labels = inputs((8, 5), scale=300.0, dtype=torch.float32)
    cross_entropy, poly = poly1_cross_entropy_kernel(logits, labels, 1.0)
    (grad,) = torch.autograd.grad((cross_entropy + poly).sum(), logits)
    exact = logits.detach().double().requires_grad_()
    exact_terms = paper_terms(exact, labels, 1.0)
    (exact_grad,) = torch.autograd.grad(sum(exact_terms).sum(), exact)
    assert torch.isfinite(cross_entropy).all() and torch.isfinite(grad).all()
    assert (cross_entropy > 100).any()  # some labels far below the largest logit
    torch.testing.assert_close(cross_entropy.double(), exact_terms[0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(poly.double(), exact_terms[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), exact_grad, rtol=1e-5, atol=1e-6)


def test_float32_terms_and_gradient_are_as_accurate_as_torchs():
    logits64, labels = inputs((64, 100))
    logits32 = logits64.detach().float().requires_grad_()
    exact_terms = paper_terms(logits64, labels, 1.0)
    (exact,) = torch.autograd.grad(sum(exact_terms).sum(), logits64)

    def errors(loss):
        terms = loss(logits32)
        (grad,) = torch.autograd.grad(sum(terms).sum(), logits32)
        pairs = zip(terms, exact_terms, strict=True)
        term_error = max((term.double() - ref).abs().max() for term, ref in pairs)
        return term_error, (grad.double() - exact).abs().max()

    ours = errors(lambda x: poly1_cross_entropy_kernel(x, labels, 1.0))
    torchs = errors(lambda x: paper_terms(x, labels, 1.0))
    assert ours[0] <= 2 * torchs[0] + 1e-7
    assert ours[1] <= 2 * torchs[1] + 1e-9


def test_poly1_holds_one_logits_sized_buffer_where_torchs_formula_holds_three():
    logits, labels = inputs((256, 1000), dtype=torch.float32)
    logits_bytes = logits.numel() * logits.element_size()
    ours = loss_step_peak_memory(LF.poly1, (logits, labels), torch.device("cpu"))
    paper = loss_step_peak_memory(
        lambda x, y: sum(paper_terms(x, y, 1.0)).mean(), (logits, labels), torch.device("cpu")
    )
    assert ours < 1.1 * logits_bytes
    assert paper > 2.9 * logits_bytes


@pytest.mark.parametrize("bad", [-1, -100, 1000])
def test_a_label_out_of_range_is_refused_on_the_kernel_with_value_checks_off(bad):
    logits, labels = inputs((256, 1000), dtype=torch.float32)  # from the kernel's threshold
    labels[5] = bad
    with lossplug.value_checks(False), pytest.raises(ValueError, match=f"class index {bad}"):
        LF.poly1_components(logits, labels)
