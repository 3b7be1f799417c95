"""Classification heads: mean pooling over real tokens, and the round-0 head (`task.head_init`), on the
session's tiny Llama (built from config, no downloads)."""

import pytest
import torch

from common.config import HeadInit, LoraSettings, Pooling, TaskConfig, TaskType
from common.errors import ConfigError
from common.model import MeanPooledClassifier, label_name_text, load_lora_model

LABELS = ("chest_pain", "blood-test", "follow up")
LORA = LoraSettings(target_modules=("q_proj", "v_proj"))


def task(**kwargs):
    return TaskConfig(type=TaskType.CLASSIFICATION, labels=LABELS, **kwargs)


def logits(model, tokenizer, texts):
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def test_mean_pooling_ignores_padding(base_model_dir, tokenizer):
    model = load_lora_model(str(base_model_dir), LORA, task(pooling=Pooling.MEAN))
    assert isinstance(model.base_model.model, MeanPooledClassifier)
    alone = logits(model, tokenizer, ["patient reports chest pain"])
    # The same record in a batch with a much longer one: right-padded, same logits.
    batched = logits(model, tokenizer, ["patient reports chest pain", "a far longer note " * 12])
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-4, atol=1e-5)


def test_label_names_head_is_a_zero_shot_classifier_at_round_0(base_model_dir, tokenizer):
    model = load_lora_model(str(base_model_dir), LORA, task(pooling="mean", head_init="label_names"))
    # A record that reads exactly as a label's name is closest (cosine 1) to that label's row.
    out = logits(model, tokenizer, [label_name_text(x) for x in LABELS])
    assert out.argmax(-1).tolist() == [0, 1, 2]
    assert [label_name_text(x) for x in LABELS] == ["chest pain", "blood test", "follow up"]
    head = model.base_model.model.classifier.modules_to_save["default"]
    torch.testing.assert_close(head.weight.norm(dim=-1), torch.full((3,), 2.0))
    assert torch.count_nonzero(head.bias) == 0


def test_label_names_head_is_the_same_for_every_party(base_model_dir):
    """Coordinator and sites build it independently; it must not depend on who or when."""
    heads = [
        load_lora_model(str(base_model_dir), LORA, task(pooling="mean", head_init="label_names"), seed=s)
        .base_model.model.classifier.modules_to_save["default"]
        .weight
        for s in (0, 1)
    ]
    assert torch.equal(heads[0], heads[1])


@pytest.mark.parametrize("pooling", list(Pooling))
def test_zeros_head_starts_with_every_label_equally_likely(base_model_dir, tokenizer, pooling):
    model = load_lora_model(str(base_model_dir), LORA, task(pooling=pooling, head_init=HeadInit.ZEROS))
    out = logits(model, tokenizer, ["any note at all", "another"])
    assert torch.count_nonzero(out) == 0


def test_label_names_head_needs_mean_pooling(base_model_dir):
    with pytest.raises(ConfigError, match="pooling"):
        load_lora_model(str(base_model_dir), LORA, task(head_init="label_names"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"type": TaskType.CAUSAL_LM, "pooling": "mean"}, "classification only"),
        ({"type": TaskType.CAUSAL_LM, "head_init": "zeros"}, "classification only"),
        ({"type": TaskType.CLASSIFICATION, "labels": LABELS, "pooling": "max"}, "task.pooling"),
        ({"type": TaskType.CLASSIFICATION, "labels": LABELS, "head_init": "names"}, "task.head_init"),
    ],
)
def test_task_config_rejects_bad_pooling_and_head_init(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TaskConfig(**kwargs)


def test_loading_a_lora_model_leaves_torch_global_generator_as_it_was(base_model_dir):
    """The LoRA init seed must not make later global draws predictable from the config."""
    torch.manual_seed(12345)
    before = torch.get_rng_state()
    load_lora_model(str(base_model_dir), LoraSettings(target_modules=("q_proj", "v_proj")), TaskConfig(), seed=0)
    assert torch.equal(torch.get_rng_state(), before)


def test_ffa_lora_freezes_a_at_its_start_trains_b_and_halves_the_trained_lora_tensors(base_model_dir, tokenizer):
    """`lora.ffa`: A keeps its seeded start (the same at every site), B trains; LoRA's trained bytes halve
    (the tiny model's q/v projections are square, so A and B of a layer have the same size)."""
    from dataclasses import replace

    ffa = load_lora_model(str(base_model_dir), replace(LORA, ffa=True), task(), seed=0)
    plain = load_lora_model(str(base_model_dir), LORA, task(), seed=0)
    start = {name: p.detach().clone() for name, p in ffa.named_parameters()}

    def trained_lora_bytes(model):
        return sum(
            p.numel() * p.element_size() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n
        )

    assert 0 < 2 * trained_lora_bytes(ffa) == trained_lora_bytes(plain)
    params = [p for p in ffa.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    labels = torch.tensor([0, 1, 2])
    for _ in range(3):  # B starts at 0, so A's gradient is 0 at the first step only: take three
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits_train(ffa, tokenizer, LABELS), labels).backward()
        optimizer.step()
    after = dict(ffa.named_parameters())
    a_names = [n for n in start if ".lora_A." in n]
    b_names = [n for n in start if ".lora_B." in n]
    assert a_names and len(a_names) == len(b_names)
    assert all(torch.equal(after[n], start[n]) for n in a_names)
    assert all(not torch.equal(after[n], start[n]) for n in b_names)
    assert all(torch.equal(dict(plain.named_parameters())[n], start[n]) for n in a_names)  # same seeded A


def logits_train(model, tokenizer, texts):
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
