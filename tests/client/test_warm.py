"""The warm site (client/warm.py): what it keeps between messages changes nothing a fresh process would send,
and anything the records were made from changing makes it scrub them again."""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message

from client.site import handle_train
from client.warm import WARM, data_version
from common.adapter import arrays_to_state
from common.config import PrivacyConfig, ScrubConfig, ScrubProfile, load_site_config
from common.reply import reply_parts


def _set_privacy(cfg: Path, privacy: PrivacyConfig) -> None:
    """Rewrite the site's TOML with another `[privacy]` section, everything else as it was."""
    cfg.write_text(replace(load_site_config(cfg), privacy=privacy).to_toml(defaults=True))


def _arrays(reply: Message) -> dict[str, np.ndarray]:
    assert not reply.has_error(), reply.error.reason
    return {k: v.numpy() for k, v in arrays_to_state(reply_parts(reply.content).arrays).items()}


pytestmark = pytest.mark.usefixtures("flower_task")
with warnings.catch_warnings():  # the DP-off warning is for a site's log
    warnings.simplefilter("ignore", UserWarning)
    DP_OFF = PrivacyConfig(
        enabled=False, max_grad_norm=1.0, budget_epsilon=math.inf, budget_delta=1e-5, eval_noise_multiplier=2.0
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_warm_round_after_a_dp_round_sends_what_a_fresh_process_sends(
    tmp_path: Path, train_message, site_context, make_site
) -> None:
    WARM.drop()
    warm_cfg, _ = make_site(sigma=0.5, budget=100, root=tmp_path / "warm")
    cold_cfg, _ = make_site(privacy=DP_OFF, root=tmp_path / "cold", warm_runtime=False)

    # Round 1 under DP leaves the cached model trained and wrapped by Opacus; round 2 must not see either.
    _arrays(handle_train(train_message(1), site_context(warm_cfg)))
    wrapped = [n for n, p in WARM.slots["model"].value.named_parameters() if hasattr(p, "grad_sample")]
    assert wrapped == [], "Opacus' per-sample gradients stayed on the cached model"
    _set_privacy(warm_cfg, DP_OFF)  # without DP, training is deterministic (`[training] seed` shuffles)
    warm = _arrays(handle_train(train_message(2), site_context(warm_cfg)))
    assert WARM.hits.get("model", 0) >= 1, "the second round did not reuse the model"

    cold = _arrays(handle_train(train_message(2), site_context(cold_cfg)))
    assert "model" not in WARM.slots, "warm_runtime = false keeps nothing between messages"
    assert warm.keys() == cold.keys()
    for key in warm:
        np.testing.assert_array_equal(warm[key], cold[key], err_msg=key)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_edited_record_file_is_scrubbed_again_before_training(
    caplog: pytest.LogCaptureFixture, train_message, site_context, make_site
) -> None:
    WARM.drop()
    cfg, _ = make_site(sigma=0.5, budget=100)
    data = cfg.parent / "data" / "records.jsonl"
    before = data_version(load_site_config(str(cfg)))
    with caplog.at_level(logging.INFO, logger="silo.site"):
        first = handle_train(train_message(1), site_context(cfg))
        second = handle_train(train_message(2), site_context(cfg))
        assert caplog.text.count("loaded records") == 1
        with data.open("a") as fh:
            for i in range(10):
                fh.write(json.dumps({"text": f"Patient Jonathan Smithers, SSN 219-09-9999, visit {i}."}) + "\n")
        third = handle_train(train_message(3), site_context(cfg))
        assert caplog.text.count("loaded records") == 2
    assert data_version(load_site_config(str(cfg))) != before

    def records_in(reply: Message) -> int:
        assert not reply.has_error(), reply.error.reason
        return int(json.loads(reply.content["site"]["scrub-report"])["records_in"])

    assert records_in(first) == records_in(second)
    assert records_in(third) == records_in(second) + 10
    assert "Smithers" not in str(third.content["site"]) and "219-09-9999" not in str(third.content["site"])


@pytest.mark.parametrize("change", ["scrub", "data"])
def test_the_data_version_changes_with_the_settings_that_made_the_records(change: str, make_site) -> None:
    cfg, _ = make_site(sigma=0.5, budget=100)
    before = data_version(load_site_config(str(cfg)))
    config = load_site_config(cfg)
    if change == "scrub":
        config = replace(config, scrub=ScrubConfig(profile=ScrubProfile.STRICT))
    else:
        config = replace(config, data=replace(config.data, holdout_fraction=0.25))
    cfg.write_text(config.to_toml(defaults=True))
    assert data_version(load_site_config(str(cfg))) != before
