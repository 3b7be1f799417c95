"""The frozen-prefix activation cache: the split is found, not assumed; training from the cache gives the
whole model's gradients and DP-SGD updates; a cache is reused only while every input it depends on holds.
A tiny BERT encoder from config (3 layers, hidden 32) under Silo's mean-pooled classifier; no downloads."""

import warnings
from dataclasses import replace

import pytest
import torch
from torch.utils.data import TensorDataset

from client.prefix_cache import PrefixCaches, build_prefix_cache, trainable_split
from client.privacy import make_private
from client.train import per_sample_loss, train_round
from common.adapter import adapter_state
from common.config import LoraSettings, TaskConfig, TaskType, TrainingConfig
from common.config.privacy import PrivacyConfig
from common.model import MeanPooledClassifier, attach_lora

pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel  # noqa: E402

LABELS = ("a", "b", "c", "d")
TASK = TaskConfig(type=TaskType.CLASSIFICATION, labels=LABELS, pooling="mean")
TOP_VALUE = LoraSettings(r=2, alpha=4, target_modules=("layer.2.attention.self.value",))
CPU = torch.device("cpu")
VOCAB, SEQ = 100, 12


def tiny_bert_classifier(lora: LoraSettings = TOP_VALUE, *, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = attach_lora(MeanPooledClassifier(BertModel(config), len(LABELS)), lora, TASK, seed=seed)
    with torch.no_grad():  # B starts at 0; a nonzero B makes the top layer's LoRA matter to every gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    return model


def records(n: int = 24, seed: int = 1) -> TensorDataset:
    """Random token ids with 3 to SEQ real tokens each (padding must not change a record's states)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=gen)
    lengths = torch.randint(3, SEQ + 1, (n,), generator=gen)
    attention = (torch.arange(SEQ).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return TensorDataset(ids * attention, attention, torch.randint(0, len(LABELS), (n,), generator=gen))


def gradients(model, batch):
    model.zero_grad(set_to_none=True)
    per_sample_loss(model, batch, TASK).sum().backward()
    return {id(p): p.grad.clone() for p in model.parameters() if p.requires_grad}


def test_prefix_cache_gives_the_whole_models_gradients():
    model = tiny_bert_classifier().train()
    data = records()
    cache = build_prefix_cache(model, data, device=CPU)
    assert cache is not None and cache.split == 2
    assert cache.dataset.tensors[0].shape == (len(data), SEQ, 32)  # the states entering layer 2

    whole = gradients(model, data.tensors)
    from_cache = gradients(cache.top, cache.dataset.tensors)
    assert whole.keys() == from_cache.keys() and len(whole) == 4  # LoRA A and B, the head's weight and bias
    for key, grad in whole.items():
        assert grad.abs().max() > 0
        # float32, the same operations in the same order: measured equal to ~1e-7 relative.
        torch.testing.assert_close(from_cache[key], grad, rtol=1e-5, atol=1e-6)


def _noisy_dp(seed: int):
    """Real DP-SGD (noise 1, clip 0.5) drawing sampling and noise from a caller's generator: two runs with
    the same seed sample the same records and add the same noise, so their updates must agree."""
    config = PrivacyConfig(max_grad_norm=0.5, budget_epsilon=10.0, budget_delta=1e-5, noise_multiplier=1.0)

    def wrap(model, optimizer, loader):
        return make_private(
            model,
            optimizer,
            loader,
            config=config,
            noise_multiplier=1.0,
            max_grad_norm=0.5,
            generator=torch.Generator().manual_seed(seed),
        )

    return wrap


def test_dp_training_from_the_prefix_cache_equals_training_the_whole_model():
    data = records(40)
    training = TrainingConfig(epochs=2, batch_size=10, learning_rate=0.01, device="cpu", dropout=0.0)
    states, steps = [], []
    for cached in (False, True):
        model = tiny_bert_classifier()
        start = adapter_state(model)
        prefix = build_prefix_cache(model, data, device=CPU) if cached else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus' notes on the caller's generator
            result = train_round(
                model, data, task=TASK, training=training, device=CPU, privacy=_noisy_dp(3), prefix=prefix
            )
        steps.append(result.private.steps_taken)
        states.append(adapter_state(model))
    assert steps[0] == steps[1] == 8
    for key, value in states[0].items():
        assert not torch.equal(value, start[key]) or "lora_A" in key  # it trained (A moves too, but slowly)
        # Same records, same noise: only float32 rounding differs (measured ~1e-7); Adam's 8 steps of
        # lr 0.01 move the parameters by ~0.08, so a wrong gradient anywhere fails by orders of magnitude.
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize(
    ("targets", "split"),
    [
        (("layer.2.attention.self.value",), 2),
        (("layer.1.attention.self.query", "layer.2.output.dense"), 1),
        (("layer.0.attention.self.value",), 0),
    ],
)
def test_trainable_split_is_the_lowest_layer_with_a_trainable_parameter(targets, split):
    model = tiny_bert_classifier(replace(TOP_VALUE, target_modules=targets))
    assert trainable_split(model) == split
    # a cache at layer 0 would save only the embedding lookup: none is built
    assert (build_prefix_cache(model, records(4), device=CPU) is None) == (split == 0)


def test_head_only_training_caches_the_last_layers_states():
    model = tiny_bert_classifier()
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(False)  # a linear-probe round: only the head trains
    cache = build_prefix_cache(model, records(), device=CPU)
    assert cache is not None and cache.split == 3 and len(cache.top.layers) == 0
    torch.testing.assert_close(
        cache.top(*cache.dataset.tensors[:2]).logits, model.eval()(*records().tensors[:2]).logits, rtol=1e-5, atol=1e-6
    )


def test_no_cache_when_a_parameter_below_the_layers_trains_or_the_layout_is_unknown():
    model = tiny_bert_classifier()
    model.get_base_model().encoder.embeddings.word_embeddings.weight.requires_grad_(True)
    assert trainable_split(model) is None and build_prefix_cache(model, records(4), device=CPU) is None

    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    lora = LoraSettings(r=2, alpha=4, target_modules=("layers.1.self_attn.v_proj",))
    llama = attach_lora(MeanPooledClassifier(LlamaModel(config), len(LABELS)), lora, TASK)
    assert trainable_split(llama) is None and build_prefix_cache(llama, records(4), device=CPU) is None


def test_a_kept_cache_is_rebuilt_when_the_records_or_the_prefix_change_and_only_then():
    model, data = tiny_bert_classifier(), records()
    caches = PrefixCaches()
    first = caches.get(model, data, device=CPU)
    with torch.no_grad():  # a new global adapter changes only the layers above the split and the head
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1)
    assert caches.get(model, data, device=CPU) is first and caches.builds == 1

    assert caches.get(model, records(seed=2), device=CPU) is not first and caches.builds == 2
    again = caches.get(model, records(seed=2), device=CPU)
    with torch.no_grad():
        model.get_base_model().encoder.encoder.layer[0].output.dense.weight.mul_(1.01)  # a base weight below
    assert caches.get(model, records(seed=2), device=CPU) is not again and caches.builds == 3


def test_distributed_step_from_the_prefix_cache_equals_the_whole_models():
    import numpy as np

    from client.distributed_dp import adapter_parameters, distributed_step
    from common.accounting import BudgetFigure
    from common.distributed_dp import plan_distributed_round

    data = records(24)
    lr, grid = 0.05, 1e-9  # one record's step ~2e6 integers: rounding (< 1 per record) is ~1e-6 of it
    outputs = []
    for cached in (False, True):
        model = tiny_bert_classifier()
        dim = sum(p.numel() for p in adapter_parameters(model).values())
        plan = plan_distributed_round(
            noise_multiplier=1e-9,  # a vanishing noise share: the two steps differ by rounding alone
            min_honest=2,
            budget_figure=BudgetFigure.SUM,
            learning_rate=lr,
            max_grad_norm=0.5,
            expected_batch=0.5 * len(data),
            grid_step=grid,
            dim=dim,
            sample_rate=0.5,
        )
        prefix = build_prefix_cache(model, data, device=CPU) if cached else None
        assert (prefix is not None) is cached
        integers, taken = distributed_step(
            model,
            data,
            task=TASK,
            plan=plan,
            learning_rate=lr,
            max_grad_norm=0.5,
            device=CPU,
            rng=np.random.default_rng(7),  # the same Poisson draw and rounding draws in both runs
            prefix=prefix,
        )
        outputs.append((integers, taken))
    (whole, taken), (from_cache, taken_cached) = outputs
    assert taken == taken_cached > 0
    assert whole.keys() == from_cache.keys() and len(whole) == 4  # LoRA A and B, the head's weight and bias
    for key, values in whole.items():
        assert np.abs(values).max() > 1000 * taken, key  # it stepped
        # float32 gradients agree to ~1e-7 relative; a rounding draw may then land on the other integer.
        assert np.abs(from_cache[key] - values).max() <= taken, key
