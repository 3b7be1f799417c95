import math
import re
import tomllib

import pytest

from common.accounting import Accountant, EpsilonConversion, compute_epsilon
from common.config.privacy import GradSampleMode, PrivacyConfig
from common.errors import ConfigError

BUDGET = "max_grad_norm = 1.0\nbudget_epsilon = 8.0\nbudget_delta = 1e-5\n"


def load(toml: str) -> PrivacyConfig:
    return PrivacyConfig.from_mapping(tomllib.loads(toml))


def test_privacy_config_defaults_are_dp_on_rdp_hooks_poisson():
    config = load(BUDGET + "noise_multiplier = 1.1\n")
    assert config.enabled and config.poisson_sampling
    assert config.accountant is Accountant.RDP and config.grad_sample_mode is GradSampleMode.HOOKS
    assert config.conversion is EpsilonConversion.BALLE2020
    assert config.resolve_noise_multiplier(sample_rate=0.01, steps_per_round=10) == 1.1


def test_privacy_config_derives_noise_from_target_and_planned_rounds():
    config = load(BUDGET + "target_epsilon = 2.0\ntarget_delta = 1e-5\nplanned_rounds = 10\n")
    sigma = config.resolve_noise_multiplier(sample_rate=0.01, steps_per_round=50)
    evaluations = [config.eval_event] * (10 + 1)  # one answer a round, and the final one
    spent = compute_epsilon([(sigma, 0.01, 10 * 50), *evaluations], delta=1e-5)
    assert 2.0 - 0.01 <= spent <= 2.0
    assert compute_epsilon([(sigma, 0.01, 10 * 50)], delta=1e-5) < 2.0 - 0.01  # the answers cost something


def test_privacy_config_prv_has_no_conversion():
    assert load(BUDGET + 'noise_multiplier = 1.0\naccountant = "prv"\n').conversion is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("noise_multiplier = 1.0\nfoo = 1\n", "unknown key(s) in `[privacy]`: foo"),
        ('noise_multiplier = 1.0\naccountant = "gdp"\n', "`accountant` must be one of 'rdp', 'prv', got 'gdp'"),
        ('noise_multiplier = 1.0\ngrad_sample_mode = "ew"\n', "`grad_sample_mode` must be one of"),
        ("noise_multiplier = -1.0\n", "`noise_multiplier` must be a finite number > 0, got -1.0."),
        ("", "`noise_multiplier` is not set, so `target_epsilon`, `target_delta`, `planned_rounds` must be"),
        ("noise_multiplier = 1.0\ntarget_epsilon = 1.0\n", "either `noise_multiplier` or the target"),
        (
            "target_epsilon = 9.0\ntarget_delta = 1e-5\nplanned_rounds = 3\n",
            "`target_epsilon` must be <= `budget_epsilon`",
        ),
        (
            "target_epsilon = 1.0\ntarget_delta = 1e-5\nplanned_rounds = 0\n",
            "`planned_rounds` must be an integer >= 1, got 0.",
        ),
        ('noise_multiplier = 1.0\nenabled = "no"\n', "`enabled` must be true or false"),
        ("noise_multiplier = 1.0\nenabled = false\n", "set `budget_epsilon = inf`"),
    ],
)
def test_privacy_config_rejects_bad_values_naming_field_and_value(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(BUDGET + extra)


def test_privacy_config_rejects_delta_outside_unit_interval():
    with pytest.raises(ConfigError, match=r"`budget_delta` must be in \(0, 1\), got 2\."):
        load("max_grad_norm = 1.0\nbudget_epsilon = 8.0\nbudget_delta = 2\nnoise_multiplier = 1.0\n")


def test_privacy_config_requires_the_budget():
    with pytest.raises(ConfigError, match="missing required key `budget_epsilon`"):
        PrivacyConfig.from_mapping({"max_grad_norm": 1.0, "budget_delta": 1e-5, "noise_multiplier": 1.0})


def test_privacy_config_dp_off_must_be_explicit_and_warns():
    with pytest.warns(UserWarning, match="WITHOUT differential privacy"):
        config = load("max_grad_norm = 1.0\nbudget_epsilon = inf\nbudget_delta = 1e-5\nenabled = false\n")
    assert config.budget_epsilon == math.inf
    assert config.resolve_noise_multiplier(sample_rate=0.1, steps_per_round=10) == 0.0


def test_privacy_config_warns_when_sampling_is_not_poisson():
    with pytest.warns(UserWarning, match="assume Poisson sampling"):
        load(BUDGET + "noise_multiplier = 1.0\npoisson_sampling = false\n")
