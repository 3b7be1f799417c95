"""The LoRA adapter on the wire (Flower ArrayRecord) and on disk (PEFT format): bit-exact both ways."""

import pytest
import torch
from peft import PeftModel

from common.adapter import adapter_state, arrays_to_state, hash_state, state_to_arrays, state_to_numpy
from common.config import LoraSettings, TaskConfig, TaskType
from common.model import load_base_model, load_lora_model
from server.checkpoint import RunDirectory

CAUSAL_LM = TaskConfig(type=TaskType.CAUSAL_LM)
CLASSIFICATION = TaskConfig(type=TaskType.CLASSIFICATION, labels=("routine", "urgent"))
MEAN_POOLED = TaskConfig(
    type=TaskType.CLASSIFICATION, labels=("routine", "urgent"), pooling="mean", head_init="label_names"
)
LORA = LoraSettings(r=4, alpha=8)


def _randomised(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """The same keys and shapes with random values: a fresh adapter's B matrices are all zero,
    which would let a round trip that drops or swaps tensors pass unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=torch.float32).to(v.dtype) for k, v in state.items()}


def _assert_bit_exact(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_state_to_arrays_round_trip_is_bit_exact(base_model_dir, dtype):
    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM)
    state = {k: v.to(dtype) for k, v in _randomised(adapter_state(model)).items()}

    back = arrays_to_state(state_to_arrays(state))

    _assert_bit_exact(back, state)


def test_arrays_to_state_returns_independent_tensors():
    state = {"a.lora_A.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    arrays = state_to_arrays(state)

    first = arrays_to_state(arrays)
    first["a.lora_A.weight"].add_(100.0)

    assert torch.equal(arrays_to_state(arrays)["a.lora_A.weight"], state["a.lora_A.weight"])


@pytest.mark.parametrize(
    "task", [CAUSAL_LM, CLASSIFICATION, MEAN_POOLED], ids=["causal_lm", "classification", "mean_pooled"]
)
def test_save_round_loads_bit_exact_with_peft_from_pretrained(base_model_dir, tmp_path, task):
    model = load_lora_model(str(base_model_dir), LORA, task)
    state = _randomised(adapter_state(model))
    adapter_config = model.peft_config["default"].to_dict()
    run = RunDirectory.open_or_create(
        tmp_path / "run",
        config_hash="h",
        config={},
        base_model=str(base_model_dir),
        code_version="test",
        rounds_planned=1,
    )
    run.save_round(0, state_to_numpy(state), adapter_config=adapter_config, record={})

    loaded = PeftModel.from_pretrained(load_base_model(str(base_model_dir), task), run.round_dir(0))

    _assert_bit_exact(adapter_state(loaded), state)


def test_hash_state_changes_when_any_single_element_changes():
    gen = torch.Generator().manual_seed(0)
    state = {
        "layer.lora_A.weight": torch.randn(2, 3, generator=gen),
        "layer.lora_B.weight": torch.randn(3, 2, generator=gen),
    }
    original = hash_state(state)
    seen = {original}
    for key, tensor in state.items():
        for index in range(tensor.numel()):
            changed = {k: v.clone() for k, v in state.items()}
            changed[key].view(-1)[index] = torch.nextafter(tensor.view(-1)[index], torch.tensor(float("inf")))
            seen.add(hash_state(changed))
    assert len(seen) == 1 + sum(t.numel() for t in state.values())
    assert hash_state({k: v.clone() for k, v in state.items()}) == original


def test_hash_state_covers_keys_dtypes_and_shapes():
    values = torch.arange(6, dtype=torch.float32)
    base = hash_state({"a": values.reshape(2, 3)})

    assert hash_state({"b": values.reshape(2, 3)}) != base
    assert hash_state({"a": values.reshape(3, 2)}) != base
    assert hash_state({"a": values.view(torch.int32).reshape(2, 3)}) != base  # same bytes, other dtype


def test_adapter_state_holds_only_lora_tensors_for_causal_lm(base_model_dir):
    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM)

    state = adapter_state(model)

    # 2 layers x 4 target modules x (A, B).
    assert len(state) == 2 * 4 * 2
    assert all(".lora_A." in k or ".lora_B." in k for k in state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == len(state)


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_adapter_state_holds_no_base_weights_when_an_embedding_layer_is_a_target(base_model_dir, target):
    # PEFT's default (save_embedding_layers="auto") would add the layer's full base weight here.
    model = load_lora_model(str(base_model_dir), LoraSettings(r=4, target_modules=("q_proj", target)), CAUSAL_LM)

    state = adapter_state(model)

    assert state and all(".lora_" in k for k in state), [k for k in state if ".lora_" not in k]
    assert any(target in k for k in state)


def test_adapter_state_includes_the_score_head_for_classification(base_model_dir):
    model = load_lora_model(str(base_model_dir), LORA, CLASSIFICATION)

    state = adapter_state(model)

    head = [k for k in state if ".lora_" not in k]
    assert len(head) == 1 and head[0].endswith("score.weight")
    assert state[head[0]].shape == (2, 64)  # (labels, hidden size)
    assert not any("embed_tokens" in k or "lm_head" in k or "mlp" in k for k in state)
