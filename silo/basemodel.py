"""Build a small base model from a config, with a tokenizer trained offline.

No weights can be downloaded here (and many hospital networks are just as closed), so the demo and
the tests make their own base model: a ~3M-parameter Llama from `LlamaConfig` and a byte-level BPE
tokenizer, both saved with `save_pretrained` so `from_pretrained(dir)` (the real loading path) reads
them back, and so a round's adapter can be loaded onto the same base later.

The tokenizer is trained on public-style text from its own seed, never on a site's records: a
vocabulary learnt from raw records would itself leak names and numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Special tokens; the BPE reserves them first so their ids are stable (0, 1, 2).
PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048):
    """A byte-level BPE, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, bos_token=BOS, eos_token=EOS)


def build_base_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 2048,
    hidden_size: int = 256,
    num_layers: int = 4,
    seed: int = 0,
) -> Path:
    """Write a tokenizer and a freshly initialised Llama to `out_dir`; returns the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
