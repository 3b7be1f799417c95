"""The base model's fingerprint (common/model_pin.py): the same model hashes the same however it was
saved; any changed weight, config value or tokenizer changes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from common.errors import ConfigError
from common.model_pin import model_fingerprint

CONFIG = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "transformers_version": "5.23.0"}


def _model(path: Path, tensors: dict[str, torch.Tensor], *, config: dict | None = None, shards: int = 1) -> Path:
    path.mkdir(parents=True)
    names = sorted(tensors)
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, str(path / f"model-{i}.safetensors"), metadata={"saved_by": f"run {i}"})
    (path / "config.json").write_text(json.dumps(config or CONFIG))
    (path / "tokenizer.json").write_text('{"vocab": {"a": 0, "b": 1}}')
    return path


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(4, 8, generator=g),
        "layer.q.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),  # dtypes numpy lacks are hashed too
        "norm.weight": torch.ones(8),
    }


def test_model_fingerprint_same_weights_saved_differently_agree(tmp_path: Path) -> None:
    one = _model(tmp_path / "one", _tensors())
    two = _model(tmp_path / "two", _tensors(), shards=2, config={**CONFIG, "transformers_version": "4.0.0"})
    assert model_fingerprint(one) == model_fingerprint(two)
    assert len(model_fingerprint(one)) == 64


def test_model_fingerprint_changes_with_any_weight(tmp_path: Path) -> None:
    base = model_fingerprint(_model(tmp_path / "base", _tensors()))
    for i, name in enumerate(sorted(_tensors())):
        tensors = _tensors()
        flat = tensors[name].view(-1)
        flat[3] = flat[3] + 1  # one element of one tensor
        assert model_fingerprint(_model(tmp_path / f"w{i}", tensors)) != base, name


def test_model_fingerprint_changes_with_config_and_tokenizer(tmp_path: Path) -> None:
    base = model_fingerprint(_model(tmp_path / "base", _tensors()))
    other_config = _model(tmp_path / "config", _tensors(), config={**CONFIG, "num_hidden_layers": 2})
    assert model_fingerprint(other_config) != base
    other_tokenizer = _model(tmp_path / "tok", _tensors())
    (other_tokenizer / "tokenizer.json").write_text('{"vocab": {"a": 1, "b": 0}}')
    assert model_fingerprint(other_tokenizer) != base


def test_model_fingerprint_sees_a_file_rewritten_in_place(tmp_path: Path) -> None:
    path = _model(tmp_path / "m", _tensors())
    before = model_fingerprint(path)
    tensors = _tensors()
    tensors["norm.weight"] = torch.zeros(8)
    save_file({n: tensors[n] for n in sorted(tensors)}, str(path / "model-0.safetensors"))
    assert model_fingerprint(path) != before  # the per-process cache is keyed on size and mtime


def test_model_fingerprint_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no weights file"):
        model_fingerprint(tmp_path / "empty")
    with pytest.raises(ConfigError, match="neither a directory nor a hub id"):
        model_fingerprint("no-such-org/no-such-model-anywhere")
    bad = _model(tmp_path / "bad", _tensors())
    (bad / "model-0.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not")
    with pytest.raises(ConfigError, match="not a readable safetensors"):
        model_fingerprint(bad)
