"""Guards for DP-SGD on a PEFT LoRA Llama (Opacus issue 820: corrupted LoRA updates with normal-looking
loss and epsilon). Tiny models from config; no downloads."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from client.privacy import make_private, planned_sample_rate
from common.config.privacy import GradSampleMode, PrivacyConfig
from common.errors import ConfigError

pytest.importorskip("peft")
from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel  # noqa: E402

from common.model import MeanPooledClassifier  # noqa: E402

VOCAB, SEQ_LEN, NUM_LABELS = 256, 16, 3
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_lora_llama(task, *, device="cpu", seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        pad_token_id=0,
        num_labels=NUM_LABELS,
    )
    if task == "causal_lm":
        base, peft_task = LlamaForCausalLM(config), TaskType.CAUSAL_LM
    elif task == "seq_cls_mean":  # `task.pooling = "mean"`: our head on the bare model's mean-pooled states
        base, peft_task = MeanPooledClassifier(LlamaModel(config), NUM_LABELS), TaskType.SEQ_CLS
    else:
        base, peft_task = LlamaForSequenceClassification(config), TaskType.SEQ_CLS
    base = base.to(device)  # before get_peft_model (Opacus issue 820)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type=peft_task,
    )
    return get_peft_model(base, lora)


def dataset(task, *, size=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, SEQ_LEN), generator=gen)
    labels = ids.clone() if task == "causal_lm" else torch.randint(0, NUM_LABELS, (size,), generator=gen)
    return TensorDataset(ids, torch.ones_like(ids), labels)


def per_sample_loss(model, batch, task):
    ids, attention, labels = batch
    logits = model(input_ids=ids, attention_mask=attention).logits
    if task.startswith("seq_cls"):
        return F.cross_entropy(logits, labels, reduction="none")
    token = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), reduction="none")
    return token.view(ids.shape[0], -1).mean(1)


def privacy_config(*, mode=GradSampleMode.HOOKS, poisson=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # poisson_sampling = false warns, on purpose
        return PrivacyConfig(
            max_grad_norm=1.0,
            budget_epsilon=10.0,
            budget_delta=1e-5,
            noise_multiplier=1.0,
            grad_sample_mode=mode,
            poisson_sampling=poisson,
        )


def sgd(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)


def train_plain(model, batches, task):
    optimizer = sgd(model)
    for batch in batches:
        optimizer.zero_grad()
        per_sample_loss(model, batch, task).mean().backward()
        optimizer.step()


def train_private(private, task, *, device="cpu"):
    for batch in private.data_loader:
        batch = [t.to(device) for t in batch]
        private.optimizer.zero_grad()
        private.reduce_loss(per_sample_loss(private.model, batch, task)).backward()
        private.optimizer.step()


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", list(GradSampleMode))
@pytest.mark.parametrize("task", ["causal_lm", "seq_cls", "seq_cls_mean"])
def test_make_private_without_noise_and_clipping_equals_plain_training(task, mode):
    plain = tiny_lora_llama(task)
    private_model = copy.deepcopy(plain)
    initial = snapshot(plain)
    data = dataset(task)
    batches = list(DataLoader(data, batch_size=4, shuffle=False))
    train_plain(plain, batches, task)

    loader = DataLoader(data, batch_size=4, shuffle=False)  # fixed batches: the same four as above
    with pytest.warns(UserWarning, match="NO privacy"):
        private = make_private(
            private_model,
            sgd(private_model),
            loader,
            config=privacy_config(mode=mode, poisson=False),
            noise_multiplier=0.0,
            max_grad_norm=1e6,
        )
    train_private(private, task)

    expected, got = snapshot(plain), snapshot(private_model)
    trainable = [n for n, p in plain.named_parameters() if p.requires_grad]
    assert trainable and private.steps_taken == len(batches)
    assert all(not torch.equal(expected[name], initial[name]) for name in trainable)  # it did train
    for name in trainable:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", ["causal_lm", "seq_cls", "seq_cls_mean"])
def test_make_private_changes_only_and_all_lora_tensors(task, device):
    model = tiny_lora_llama(task, device=device)
    before = snapshot(model)
    private = make_private(
        model,
        sgd(model),
        DataLoader(dataset(task), batch_size=4),
        config=privacy_config(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    train_private(private, task, device=device)
    after = snapshot(model)

    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable
    head = {"seq_cls": ".score.", "seq_cls_mean": ".classifier."}.get(task)
    assert all("lora_" in n or (head is not None and head in n) for n in trainable)
    assert head is None or any(head in n for n in trainable)  # the head trains, under DP like the rest
    assert all(torch.isfinite(after[n]).all() for n in trainable)
    assert private.steps_taken == len(private.data_loader) == 4


@pytest.mark.parametrize("mode", list(GradSampleMode))
def test_make_private_turns_empty_poisson_batches_into_noise_only_steps(mode):
    model = tiny_lora_llama("causal_lm")
    # 8 records, batch 1: sample rate 1/8, so a step draws no record with probability (7/8)^8 = 0.34.
    private = make_private(
        model,
        sgd(model),
        DataLoader(dataset("causal_lm", size=8), batch_size=1),
        config=privacy_config(mode=mode),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    torch.manual_seed(3)
    seen = 0
    for _epoch in range(3):
        for batch in private.data_loader:
            assert batch[0].shape[0] > 0
            seen += 1
            private.optimizer.zero_grad()
            private.reduce_loss(per_sample_loss(private.model, batch, "causal_lm")).backward()
            private.optimizer.step()
    assert private.steps_taken == 3 * 8 > seen  # every draw counted, empty ones included
    assert private.history() == [(1.0, 1 / 8, 24)]

    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    private.step_empty()
    assert private.steps_taken == 25
    assert all(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_make_private_records_sample_rate_and_accountant():
    model = tiny_lora_llama("causal_lm")
    private = make_private(
        model,
        sgd(model),
        DataLoader(dataset("causal_lm"), batch_size=4),
        config=privacy_config(),
        noise_multiplier=1.3,
        max_grad_norm=0.5,
    )
    assert private.sample_rate == 0.25 == planned_sample_rate(dataset_size=16, batch_size=4)
    assert planned_sample_rate(dataset_size=10, batch_size=4) == 1 / 3  # 3 batches, the last one short
    assert private.privacy_engine.accountant.mechanism() == "rdp"


def test_make_private_refuses_disabled_privacy():
    model = tiny_lora_llama("causal_lm")
    with pytest.warns(UserWarning, match="WITHOUT differential privacy"):
        config = PrivacyConfig(max_grad_norm=1.0, budget_epsilon=float("inf"), budget_delta=1e-5, enabled=False)
    with pytest.raises(ConfigError, match="enabled = false"):
        make_private(
            model, sgd(model), DataLoader(dataset("causal_lm")), config=config, noise_multiplier=1.0, max_grad_norm=1.0
        )


def test_make_private_refuses_a_model_without_trainable_parameters():
    model = tiny_lora_llama("causal_lm")
    optimizer = sgd(model)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_private(
            model,
            optimizer,
            DataLoader(dataset("causal_lm")),
            config=privacy_config(),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )


def test_make_private_round_fits_its_ledger_reservation(tmp_path):
    """The site protocol: plan (budget check) -> train under DP -> record what the accountant counted."""
    from client.ledger import Ledger
    from common import keys
    from common.ledger.verify import verify_ledger

    config, key = privacy_config(), keys.generate_signing_key()
    data, batch_size, epochs = dataset("causal_lm", size=10), 4, 2
    sample_rate = planned_sample_rate(dataset_size=len(data), batch_size=batch_size)
    steps = epochs * round(1 / sample_rate)
    with Ledger.open(tmp_path / "ledger.jsonl", signing_key=key, create=True) as ledger:
        round_plan = ledger.plan_round(
            noise_multiplier=1.0,
            sample_rate=sample_rate,
            steps=steps,
            delta=config.delta,
            accountant=config.accountant,
            budget_epsilon=config.budget_epsilon,
            budget_delta=config.budget_delta,
        )
        model = tiny_lora_llama("causal_lm")
        private = make_private(
            model,
            sgd(model),
            DataLoader(data, batch_size=batch_size),
            config=config,
            noise_multiplier=1.0,
            max_grad_norm=config.max_grad_norm,
        )
        for _ in range(epochs):
            train_private(private, "causal_lm")
        ledger.record_round(
            round_plan,
            run_id="r",
            round=0,
            site_id="s",
            max_grad_norm=1.0,
            dataset_size=len(data),
            update_sha256="ab" * 32,
            accountant_history=private.history(),
        )
    assert private.history() == [(1.0, sample_rate, steps)]
    assert verify_ledger(tmp_path / "ledger.jsonl", key.public_key()).ok
