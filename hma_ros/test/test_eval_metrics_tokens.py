"""Perplexity against closed forms."""

import math

import pytest
import torch

from hma_ros.eval.metrics import perplexity


def test_uniform_predictor_scores_vocab_size():
    logits = torch.zeros(2, 5, 17)
    targets = torch.randint(0, 17, (2, 5), generator=torch.Generator().manual_seed(0))
    assert perplexity(logits, targets) == pytest.approx(17.0, rel=1e-12)


def test_logits_and_log_probs_give_the_same_value():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 6, 32, generator=g) * 3
    targets = torch.randint(0, 32, (4, 6), generator=g)
    expected = math.exp(torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten()).item())
    assert perplexity(logits, targets) == pytest.approx(expected, rel=1e-10)
    assert perplexity(torch.log_softmax(logits, -1), targets) == pytest.approx(expected, rel=1e-5)


def test_known_probabilities_and_mask():
    # p(target) = 0.5 and 0.25 -> exp(mean(ln 2, ln 4)) = sqrt(8).
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    logp = probs.clamp_min(1e-30).log()
    targets = torch.tensor([1, 3, 0])
    mask = torch.tensor([True, True, False])
    assert perplexity(logp, targets, mask) == pytest.approx(math.sqrt(8.0), rel=1e-6)
    # Factorised vocabulary (..., F, V): the per-factor value; per-code = value ** F.
    fact = perplexity(torch.zeros(3, 2, 512), torch.zeros(3, 2, dtype=torch.long))
    assert fact == pytest.approx(512.0)
    assert fact**2 == pytest.approx(2.0**18)


@pytest.mark.parametrize(
    ("logits", "targets", "match"),
    [
        (torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), "must be targets"),
        (torch.zeros(2, 4), torch.tensor([0, 4]), r"\[0, 4\)"),
        (torch.zeros(2, 4), torch.zeros(2), "integer"),
    ],
)
def test_bad_inputs_are_refused(logits, targets, match):
    with pytest.raises(ValueError, match=match):
        perplexity(logits, targets)
