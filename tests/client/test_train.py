"""Local training: per-record losses (the DP property), FedProx's proximal step, a real round, metrics."""

import math

import pytest
import torch

from client.prepare import IGNORE_INDEX, encode_records
from client.scrub import build_scrubber, scrub_records
from client.train import _proximal_step, evaluate, macro_f1, per_sample_loss, set_dropout, train_round
from common.adapter import adapter_state, load_adapter_state
from common.config import DataConfig, LoraSettings, Optimizer, TaskConfig, TaskType, TrainingConfig
from common.config.scrub import ScrubConfig
from common.errors import ConfigError
from common.model import load_lora_model

CAUSAL_LM = TaskConfig(type=TaskType.CAUSAL_LM)
CLASSIFICATION = TaskConfig(type=TaskType.CLASSIFICATION, labels=("routine", "urgent"))
DATA = DataConfig()
LORA = LoraSettings(r=4, alpha=8)
CPU = torch.device("cpu")
MAX_LENGTH = 64

SHORT = {"text": "Patient stable."}
LONG = {
    "text": "Patient admitted with chest pain and shortness of breath; troponin negative, ECG normal, "
    "discharged home with follow-up in cardiology clinic next week and a repeat stress test."
}
SHORT_QA = {"prompt": "Status?", "response": "Stable."}
QA = {"prompt": "Summarise the visit.", "response": "Routine follow-up, no changes."}
LONG_QA = {"prompt": "Summarise the admission for the discharge letter.", "response": LONG["text"]}
TRAIN_TEXTS = [
    "Patient seen for routine follow-up. Blood pressure controlled.",
    "Patient reports mild headache. Advised rest and fluids.",
    "Discharge summary: recovered well after appendectomy.",
    "Follow-up visit: wound healing, sutures removed today.",
    "Patient reports cough for three days. No fever.",
    "Routine check: labs within normal limits, continue medication.",
    "Patient seen for knee pain after a fall. X-ray negative.",
    "Referral to physiotherapy for lower back pain.",
]


@pytest.fixture(scope="module")
def encode(tokenizer):
    """Records through `scrub_records` (training takes nothing else) and `encode_records`.

    One scrubber per record shape (a record without a configured field is quarantined). The test
    texts hold no identifiers, so scrubbing must leave them as written; the expected tokens rely on it."""
    scrubbers = {}

    def run(records, task: TaskConfig = CAUSAL_LM):
        fields = ("prompt", "response") if "prompt" in records[0] else ("text",)
        if fields not in scrubbers:
            scrubbers[fields] = build_scrubber(ScrubConfig(fields=fields))
        scrubbed = scrub_records(records, scrubbers[fields])
        assert [dict(r) for r in scrubbed.records] == records, scrubbed.report
        return encode_records(scrubbed.records, tokenizer, data=DATA, task=task, max_length=MAX_LENGTH)

    return run


def _lora_model(base_model_dir, task: TaskConfig = CAUSAL_LM, *, nonzero_b: bool = True):
    """A LoRA model whose adapter changes the output (a fresh adapter's B matrices are zero)."""
    model = load_lora_model(str(base_model_dir), LORA, task, seed=0)
    if nonzero_b:
        gen = torch.Generator().manual_seed(1)
        state = {
            k: (0.1 * torch.randn(v.shape, generator=gen)) if "lora_B" in k else v
            for k, v in adapter_state(model).items()
        }
        load_adapter_state(model, state)
    return model.eval()


@pytest.mark.parametrize(
    ("record", "shorter", "longer"),
    [(SHORT, SHORT, LONG), (QA, SHORT_QA, LONG_QA)],
    ids=["text", "prompt-response"],
)
def test_per_sample_loss_does_not_depend_on_the_other_records(base_model_dir, encode, record, shorter, longer):
    model = _lora_model(base_model_dir)

    with torch.no_grad():
        alone = per_sample_loss(model, encode([record]).tensors, CAUSAL_LM)
        with_longer = per_sample_loss(model, encode([record, longer]).tensors, CAUSAL_LM)
        with_shorter = per_sample_loss(model, encode([shorter, record, shorter]).tensors, CAUSAL_LM)

    assert alone.shape == (1,) and with_longer.shape == (2,) and with_shorter.shape == (3,)
    assert alone[0].item() > 0
    assert with_longer[0].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert with_shorter[1].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert with_longer[1].item() != pytest.approx(alone[0].item(), abs=1e-3)  # the neighbour is a different record


def test_per_sample_loss_of_a_long_record_does_not_depend_on_a_short_neighbour(base_model_dir, encode):
    model = _lora_model(base_model_dir)

    with torch.no_grad():
        alone = per_sample_loss(model, encode([LONG]).tensors, CAUSAL_LM)
        batched = per_sample_loss(model, encode([SHORT, LONG]).tensors, CAUSAL_LM)

    assert batched[1].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_per_sample_loss_does_not_depend_on_the_other_records_for_classification(base_model_dir, encode):
    model = _lora_model(base_model_dir, CLASSIFICATION)
    record = {"text": "Patient stable.", "label": "routine"}
    neighbour = {"text": LONG["text"], "label": "urgent"}

    with torch.no_grad():
        alone = per_sample_loss(model, encode([record], CLASSIFICATION).tensors, CLASSIFICATION)
        batched = per_sample_loss(model, encode([neighbour, record], CLASSIFICATION).tensors, CLASSIFICATION)

    assert batched[1].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_per_sample_loss_is_the_mean_over_response_tokens_only(base_model_dir, encode):
    model = _lora_model(base_model_dir)
    input_ids, attention, labels = encode([QA]).tensors

    with torch.no_grad():
        loss = per_sample_loss(model, (input_ids, attention, labels), CAUSAL_LM)[0].item()
        logits = model(input_ids=input_ids, attention_mask=attention).logits[0]

    log_probs = torch.log_softmax(logits.float(), dim=-1)
    # Token t is predicted from position t - 1; only response positions carry a label.
    token_losses = [
        -log_probs[t - 1, labels[0, t]].item() for t in range(1, labels.shape[1]) if labels[0, t] != IGNORE_INDEX
    ]
    assert loss == pytest.approx(sum(token_losses) / len(token_losses), abs=1e-5)


def test_encode_records_puts_no_loss_on_prompt_tokens(encode, tokenizer):
    input_ids, attention, labels = encode([QA, LONG_QA]).tensors

    prompt = [tokenizer.bos_token_id] + tokenizer.encode(QA["prompt"] + "\n", add_special_tokens=False)
    response = tokenizer.encode(QA["response"], add_special_tokens=False) + [tokenizer.eos_token_id]
    width = input_ids.shape[1]
    padding = width - len(prompt) - len(response)
    assert padding > 0  # the long neighbour forces padding on the prompt/response record
    assert input_ids[0].tolist() == prompt + response + [tokenizer.pad_token_id] * padding
    assert labels[0].tolist() == [IGNORE_INDEX] * len(prompt) + response + [IGNORE_INDEX] * padding
    assert attention[0].tolist() == [1] * (len(prompt) + len(response)) + [0] * padding


def test_encode_records_trains_on_every_token_of_a_text_record(encode, tokenizer):
    input_ids, attention, labels = encode([SHORT, LONG]).tensors

    length = int(attention[0].sum())
    assert input_ids[0, 0].item() == tokenizer.bos_token_id
    assert input_ids[0, length - 1].item() == tokenizer.eos_token_id
    assert labels[0, :length].tolist() == input_ids[0, :length].tolist()
    assert (labels[0, length:] == IGNORE_INDEX).all()
    assert input_ids.shape[1] == min(MAX_LENGTH, int(attention[1].sum()))  # LONG is truncated to max_length


def test_proximal_step_moves_toward_the_global_value_by_lr_mu_distance():
    param = torch.tensor([1.0, -2.0, 0.5])
    global_value = torch.tensor([0.0, 2.0, 0.5])

    _proximal_step([(param, global_value)], lr=0.1, mu=0.5)

    # w - lr * mu * (w - g) with lr * mu = 0.05: [1 - 0.05, -2 + 0.05 * 4, 0.5 - 0] = [0.95, -1.8, 0.5]
    torch.testing.assert_close(param, torch.tensor([0.95, -1.8, 0.5]), rtol=0, atol=1e-7)
    torch.testing.assert_close(global_value, torch.tensor([0.0, 2.0, 0.5]), rtol=0, atol=0)


def test_train_round_lowers_the_loss_and_changes_only_lora_tensors(base_model_dir, encode):
    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)
    dataset = encode([{"text": t} for t in TRAIN_TEXTS])
    before_loss = evaluate(model, dataset, task=CAUSAL_LM, device=CPU).loss
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # 8 epochs of 2 batches at lr 0.01 take the loss from 7.62 to 7.34 (in 0.1 s); 0.1 is a safe margin.
    training = TrainingConfig(epochs=8, batch_size=4, learning_rate=0.01, device="cpu")

    result = train_round(model, dataset, task=CAUSAL_LM, training=training, device=CPU)

    after_loss = evaluate(model, dataset, task=CAUSAL_LM, device=CPU).loss
    assert result.steps == 16 and result.num_examples == len(TRAIN_TEXTS)
    assert math.isfinite(result.loss)
    assert after_loss < before_loss - 0.1, (before_loss, after_loss)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable
    assert all("lora_" in k for k in changed)


@pytest.mark.parametrize("learning_rate", [0.5, 4.0])
def test_an_sgd_round_over_every_record_is_one_step_of_minus_lr_times_the_mean_gradient(
    base_model_dir, encode, learning_rate
):
    # `optimizer = "sgd"` with the whole site in one batch: the DP-FedSGD round. Adam would move every value by
    # about lr whatever its gradient; SGD must move each by exactly lr x its mean gradient.
    model = _lora_model(base_model_dir)
    dataset = encode([{"text": t} for t in TRAIN_TEXTS])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    reference = _lora_model(base_model_dir)
    set_dropout(reference, 0.0)
    per_sample_loss(reference.train(), tuple(dataset.tensors), CAUSAL_LM).mean().backward()
    step = {n: -learning_rate * p.grad for n, p in reference.named_parameters() if p.requires_grad}
    training = TrainingConfig(
        epochs=1,
        batch_size=len(TRAIN_TEXTS),
        learning_rate=learning_rate,
        optimizer=Optimizer.SGD,
        dropout=0.0,
        device="cpu",
    )

    result = train_round(model, dataset, task=CAUSAL_LM, training=training, device=CPU)

    assert result.steps == 1
    moved = {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}
    assert moved.keys() == step.keys()
    assert max(float(s.abs().max()) for s in step.values()) > 1e-3  # a step that can be told from none
    for name, delta in moved.items():
        torch.testing.assert_close(delta, step[name], rtol=1e-4, atol=1e-7, msg=name)


def test_train_round_stops_at_max_steps(base_model_dir, encode):
    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)
    dataset = encode([{"text": t} for t in TRAIN_TEXTS])
    training = TrainingConfig(epochs=3, batch_size=2, max_steps=5, device="cpu")

    assert train_round(model, dataset, task=CAUSAL_LM, training=training, device=CPU).steps == 5


def test_train_round_proximal_term_pulls_every_lora_tensor_to_the_global_adapter(base_model_dir, encode):
    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)
    global_state = adapter_state(model)
    dataset = encode([{"text": t} for t in TRAIN_TEXTS])
    training = TrainingConfig(epochs=1, batch_size=4, learning_rate=0.01, device="cpu")

    # lr * mu = 1: each proximal step sets w = w - (w - g) = g, so a matched parameter ends at g.
    train_round(
        model,
        dataset,
        task=CAUSAL_LM,
        training=training,
        device=CPU,
        global_state=global_state,
        proximal_mu=1 / training.learning_rate,
    )

    after = adapter_state(model)
    for key, value in global_state.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=1e-6, msg=key)


def test_macro_f1_matches_a_hand_computed_case():
    preds = [0, 1, 1, 2]
    golds = [0, 1, 2, 2]

    # label 0: tp 1, fp 0, fn 0 -> F1 1; label 1: tp 1, fp 1 -> 2/3; label 2: tp 1, fn 1 -> 2/3;
    # label 3 occurs nowhere and is skipped: (1 + 2/3 + 2/3) / 3 = 7/9.
    assert macro_f1(preds, golds, num_labels=4) == pytest.approx(7 / 9)
    assert macro_f1([0, 0], [1, 1], num_labels=2) == 0.0
    assert macro_f1([], [], num_labels=2) == 0.0


def test_evaluate_returns_accuracy_and_macro_f1_for_classification(base_model_dir, encode):
    model = load_lora_model(str(base_model_dir), LORA, CLASSIFICATION, seed=0)
    # A zero score head gives equal logits: every prediction is label 0 and every loss is ln 2.
    state = {k: torch.zeros_like(v) if k.endswith("score.weight") else v for k, v in adapter_state(model).items()}
    load_adapter_state(model, state)
    records = [
        {"text": "routine visit", "label": "routine"},
        {"text": "stable", "label": "routine"},
        {"text": "chest pain", "label": "urgent"},
        {"text": "sepsis alert", "label": "urgent"},
    ]
    dataset = encode(records, CLASSIFICATION)

    result = evaluate(model, dataset, task=CLASSIFICATION, device=CPU, batch_size=3)

    # accuracy 2/4; F1 routine 2*2 / (2*2 + 2) = 2/3, urgent 0: macro (2/3 + 0) / 2 = 1/3.
    assert result.num_examples == 4
    assert result.accuracy == pytest.approx(0.5)
    assert result.macro_f1 == pytest.approx(1 / 3)
    assert result.loss == pytest.approx(math.log(2), abs=1e-6)
    assert result.metrics() == {
        "eval_loss": result.loss,
        "num-examples": 4.0,
        "accuracy": 0.5,
        "macro_f1": result.macro_f1,
    }


def test_evaluate_causal_lm_reports_loss_only(base_model_dir, encode):
    model = _lora_model(base_model_dir)
    dataset = encode([SHORT, LONG, {"text": QA["response"]}])

    result = evaluate(model, dataset, task=CAUSAL_LM, device=CPU, batch_size=2)

    with torch.no_grad():
        expected = per_sample_loss(model, dataset.tensors, CAUSAL_LM).mean().item()
    assert result.loss == pytest.approx(expected, abs=1e-5)
    assert result.accuracy is None and result.macro_f1 is None
    assert set(result.metrics()) == {"eval_loss", "num-examples"}


@pytest.mark.parametrize("dropout", [None, 0.0])
def test_training_dropout_sets_every_dropout_of_the_model_or_leaves_the_models_own(base_model_dir, encode, dropout):
    """`training.dropout = 0` must silence LoRA's `nn.Dropout` and Llama's functional attention dropout
    alike: a training-mode forward pass is then deterministic. Unset keeps what the model was built with."""
    model = load_lora_model(str(base_model_dir), LoraSettings(r=4, alpha=8, dropout=0.5), CLASSIFICATION, seed=0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would hide LoRA's dropout
                param.normal_()
    attention = [m for m in model.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    assert attention
    for module in attention:
        module.attention_dropout = 0.5
    records = [{"text": t, "label": "routine" if i % 2 else "urgent"} for i, t in enumerate(TRAIN_TEXTS)]
    input_ids, attention_mask, _ = encode(records, CLASSIFICATION).tensors

    def forward_passes_differ():
        model.train()
        with torch.no_grad():
            first, second = (model(input_ids=input_ids, attention_mask=attention_mask).logits for _ in range(2))
        return not torch.equal(first, second)

    assert forward_passes_differ()
    training = TrainingConfig(epochs=1, batch_size=4, learning_rate=1e-3, device="cpu", dropout=dropout)
    train_round(model, encode(records, CLASSIFICATION), task=CLASSIFICATION, training=training, device=CPU)

    assert forward_passes_differ() is (dropout is None)
    assert {m.attention_dropout for m in attention} == {0.5 if dropout is None else 0.0}
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.5 if dropout is None else 0.0}


def _batch_sizes_seen(model) -> list[int]:
    """Rows of every forward pass `model` makes from now on."""
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(int(args[0].shape[0])))
    return seen


def _dp_noise_free(generator_seed: int):
    """A privacy wrapper with noise 0 and a clip no gradient reaches (plain training under Opacus), drawing
    its Poisson batches from a caller's generator so that two runs sample the same records."""
    import warnings

    from client.privacy import make_private
    from common.config.privacy import PrivacyConfig

    config = PrivacyConfig(max_grad_norm=1e6, budget_epsilon=10.0, budget_delta=1e-5, noise_multiplier=1.0)

    def wrap(model, optimizer, loader):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "NO privacy": noise 0 on purpose
            return make_private(
                model,
                optimizer,
                loader,
                config=config,
                noise_multiplier=0.0,
                max_grad_norm=1e6,
                generator=torch.Generator().manual_seed(generator_seed),
            )

    return wrap


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp-noise-0"])
def test_physical_batches_take_the_same_steps_as_one_logical_batch(base_model_dir, encode, dp):
    """A logical batch of 8 run in passes of at most 3 records gives the update of one pass of 8 (noise 0,
    a clip no gradient reaches, the same sampled records), and DP counts logical steps only."""
    from client.privacy import planned_sample_rate

    dataset = encode([{"text": t} for t in TRAIN_TEXTS * 2])  # 16 records: 2 logical batches an epoch
    results, states, seen = [], [], []
    for physical in (0, 3):
        model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)
        seen.append(_batch_sizes_seen(model))
        training = TrainingConfig(
            epochs=2, batch_size=8, physical_batch_size=physical, learning_rate=0.01, device="cpu", dropout=0.0
        )
        privacy = _dp_noise_free(7) if dp else None
        results.append(train_round(model, dataset, task=CAUSAL_LM, training=training, device=CPU, privacy=privacy))
        states.append(adapter_state(model))

    assert max(seen[1]) <= 3 < max(seen[0])  # the split run never passed more than 3 records at once
    assert sum(seen[0]) == sum(seen[1])  # the same records, in passes
    assert results[0].steps == results[1].steps
    assert not all(
        torch.equal(states[0][k], v)
        for k, v in adapter_state(load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)).items()
    )
    for key, value in states[0].items():
        # float32 sums in another order, which Adam's g / sqrt(v) magnifies where a gradient is near 0
        # (measured: 4.5e-6 at most): 2e-5 is 1/500 of one step's change (lr 0.01), so a wrong split fails.
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=2e-5, msg=key)
    if dp:
        rate = planned_sample_rate(dataset_size=16, batch_size=8)  # the logical batch's, 1/2
        for result in results:
            assert [(q, n) for _, q, n in result.private.history()] == [(rate, result.private.steps_taken)]
            assert result.private.steps_taken == 4  # 2 epochs x 2 logical batches (no pass counted)


def test_a_probe_round_trains_the_head_only_and_later_rounds_lora_too(base_model_dir, encode):
    from client.train import Phase, round_phase, training_phase

    training = TrainingConfig(epochs=2, batch_size=4, learning_rate=0.01, device="cpu", probe_rounds=2)
    assert [round_phase(r, training) for r in (1, 2, 3)] == [Phase.PROBE, Phase.PROBE, Phase.LORA]
    model = load_lora_model(str(base_model_dir), LORA, CLASSIFICATION, seed=0)
    dataset = encode(
        [{"text": t, "label": ("routine", "urgent")[i % 2]} for i, t in enumerate(TRAIN_TEXTS)], CLASSIFICATION
    )
    before = adapter_state(model)
    with training_phase(model, Phase.PROBE):
        train_round(model, dataset, task=CLASSIFICATION, training=training, device=CPU)
    after = adapter_state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" not in k for k in changed)  # the head moved, LoRA did not
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # restored after

    train_round(model, dataset, task=CLASSIFICATION, training=training, device=CPU)
    assert any("lora_B" in k and not torch.equal(after[k], v) for k, v in adapter_state(model).items())


def test_a_probe_round_needs_a_head_to_train(base_model_dir):
    from client.train import Phase, training_phase

    model = load_lora_model(str(base_model_dir), LORA, CAUSAL_LM, seed=0)
    with pytest.raises(ConfigError, match="probe_rounds"), training_phase(model, Phase.PROBE):
        pass
