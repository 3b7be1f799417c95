"""DP randomness against someone who has read the code: the noise and the Poisson masks are fresh every
round, not reproducible from the configuration or torch's seed, and have the claimed distribution.

Statistical tests, exact under the null hypothesis "the noise is i.i.d. N(0, (σ·C)²)", each at a stated
false-failure rate; the whole module fails by chance with probability below 1e-6 (union bound, see
FALSE_FAILURE_PER_CHECK and the number of checks in each test's docstring).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from client.privacy import NoiseSource, make_private, release_evaluation
from common.config.privacy import PrivacyConfig

FALSE_FAILURE_PER_CHECK = 1e-8
"""Each statistical check below fails by chance with at most this probability (two-sided); this module
makes fewer than 40 of them, so a chance failure of the module has probability below 4e-7 < 1e-6."""

SIGMA, CLIP = 1.3, 0.7
WIDTH = 100  # a 100 x 100 weight: 10,000 noise draws per step
RECORDS = 8  # batch 8 of 8 records: q = 1, Opacus' expected batch size 8


def _config() -> PrivacyConfig:
    return PrivacyConfig(max_grad_norm=CLIP, budget_epsilon=1e9, budget_delta=1e-5, noise_multiplier=SIGMA)


def _noise_of_one_step(generator: torch.Generator | None = None) -> tuple[torch.Tensor, NoiseSource]:
    """The Gaussian noise one DP step adds: an empty Poisson draw's step (no gradient at all), read back
    from the weight's change. With SGD lr 1 and mean reduction, change = -noise / expected batch size."""
    model = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    data = TensorDataset(torch.zeros(RECORDS, WIDTH))
    private = make_private(
        model,
        optimizer,
        DataLoader(data, batch_size=RECORDS),
        config=_config(),
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        generator=generator,
    )
    private.step_empty()
    return (-model.weight.detach().flatten().double() * RECORDS), private.noise_source


def _chi2_bounds(n: int) -> tuple[float, float]:
    half = FALSE_FAILURE_PER_CHECK / 2
    return float(stats.chi2.ppf(half, n)), float(stats.chi2.isf(half, n))


def _assert_n01(z: torch.Tensor) -> None:
    """Two checks on draws that should be i.i.d. N(0, 1): their mean, and their sum of squares."""
    n = z.numel()
    z_mean = float(z.mean()) * math.sqrt(n)  # N(0, 1) under the null
    assert abs(z_mean) < stats.norm.isf(FALSE_FAILURE_PER_CHECK / 2), z_mean
    low, high = _chi2_bounds(n)
    assert low < float((z**2).sum()) < high, (float((z**2).sum()) / n, "variance ratio")


def _assert_uncorrelated(x: torch.Tensor, y: torch.Tensor) -> None:
    """Pearson's r of two independent Gaussian vectors: r·sqrt((n-2)/(1-r²)) follows Student's t(n-2)."""
    n = x.numel()
    r = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    t = r * math.sqrt((n - 2) / (1 - r * r))
    assert abs(t) < stats.t.isf(FALSE_FAILURE_PER_CHECK / 2, n - 2), r


def test_dp_noise_has_the_claimed_standard_deviation_sigma_times_clip():
    """6 checks: mean and variance of 10,000 draws, in three independent rounds."""
    for _ in range(3):
        noise, source = _noise_of_one_step()
        assert source is NoiseSource.OS_SEEDED
        _assert_n01(noise / (SIGMA * CLIP))


def test_consecutive_rounds_draw_uncorrelated_noise():
    """3 checks: rounds 1-2, 2-3, 1-3 of one site, same inputs, same config."""
    rounds = [_noise_of_one_step()[0] for _ in range(3)]
    assert not torch.equal(rounds[0], rounds[1])
    for a, b in ((0, 1), (1, 2), (0, 2)):
        _assert_uncorrelated(rounds[a], rounds[b])


def test_noise_is_not_reproducible_from_the_seed_and_the_code():
    """An adversary who knows the code and every seed in the configuration replays torch's generator:
    whatever it regenerates is uncorrelated with the noise actually added. 3 checks."""
    for seed in (0, 1, 42):  # the default training seed, and others a site might set
        torch.manual_seed(seed)
        noise, _ = _noise_of_one_step()
        torch.manual_seed(seed)  # replay: what torch's global generator would have drawn
        replay = torch.normal(0.0, SIGMA * CLIP, size=(WIDTH * WIDTH,)).double()
        _assert_uncorrelated(noise, replay)


def test_a_generator_the_caller_passes_makes_noise_reproducible_and_is_labelled_so():
    """Reproducibility exists only through a function argument (tests), and the round says so."""
    first, source = _noise_of_one_step(torch.Generator().manual_seed(7))
    second, _ = _noise_of_one_step(torch.Generator().manual_seed(7))
    assert source is NoiseSource.CALLER
    assert torch.equal(first, second)


def test_poisson_masks_are_fresh_every_round():
    """The sampler draws from its own OS-seeded generator: two rounds over 400 records at q = 0.5 pick
    the same first batch with probability 2^-400, whatever torch's global seed."""
    data = TensorDataset(torch.arange(400).float().unsqueeze(1))
    picks = []
    for _ in range(2):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        private = make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(data, batch_size=200),
            config=_config(),
            noise_multiplier=SIGMA,
            max_grad_norm=CLIP,
        )
        picks.append(next(iter(private.data_loader))[0].flatten().tolist())
    assert picks[0] != picks[1]


@pytest.mark.parametrize("with_accuracy", [False, True])
def test_evaluation_release_is_centred_on_the_true_value_with_the_stated_error_bar(with_accuracy):
    """Mid-range true values (clamping never bites within 10 error bars): released - true, divided by
    the stated error bar σ·Δ·clip/n (Δ = 1 for the loss alone, √2 with accuracy), is N(0, 1) and is a
    Gaussian release of (σ, q = 1, 1 step). 2 checks on 5,000 releases per released value: 6 in all."""
    sigma, clip, n = 2.0, 10.0, 400
    losses = torch.full((n,), 5.0)  # true mean loss 5.0
    correct = torch.cat([torch.ones(n // 2), torch.zeros(n // 2)]) if with_accuracy else None  # accuracy 0.5
    delta = math.sqrt(2) if with_accuracy else 1.0
    releases = [release_evaluation(losses, correct, loss_clip=clip, noise_multiplier=sigma) for _ in range(5_000)]
    bar = releases[0].loss_noise_std
    assert bar == pytest.approx(sigma * delta * clip / n)
    assert releases[0].event == (sigma, 1.0, 1)
    assert all(r.noise_source is NoiseSource.OS_SEEDED for r in releases)
    _assert_n01(torch.tensor([(r.loss - 5.0) / bar for r in releases], dtype=torch.float64))
    if with_accuracy:
        acc_bar = sigma * delta / n
        _assert_n01(torch.tensor([(r.accuracy - 0.5) / acc_bar for r in releases], dtype=torch.float64))


def test_evaluation_without_dp_is_exact_and_says_so():
    release = release_evaluation(torch.tensor([1.0, 3.0, 50.0]), None, loss_clip=10.0, noise_multiplier=0.0)
    assert release.loss == pytest.approx((1 + 3 + 10) / 3)  # each loss clipped to 10
    assert release.noise_source is NoiseSource.NONE and release.loss_noise_std == 0.0
