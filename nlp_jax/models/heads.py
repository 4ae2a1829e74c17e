"""Task layers on the BERT encoder: one encoder, one head per task (multi-task ready).

    classification        dropout -> dense on the pooled [CLS] vector   -> logits [batch, labels]
                          (single texts and sentence pairs alike: pairs differ only in token_type_ids;
                          packed rows: one per example, [batch, k, labels])
    token_classification  dropout -> dense on every token's vector      -> logits [batch, seq, labels]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nlp_jax.models.bert import BertConfig, BertEncoder, _init, _zeros, dropout

KINDS = ("classification", "token_classification")


class TaskHead(nnx.Module):
    def __init__(self, cfg: BertConfig, kind: str, num_labels: int, rngs: nnx.Rngs):
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}: choose one of {KINDS}")
        self.kind, self.rate = kind, cfg.dropout_rate
        self.dense = nnx.Linear(cfg.hidden_size, num_labels, dtype=cfg.dtype,
                                kernel_init=_init(cfg, ("embed", None)),
                                bias_init=_zeros((None,)), rngs=rngs)

    def __call__(self, encoded: dict, dropout_rng=None) -> jax.Array:
        x = encoded["pooled_output" if self.kind == "classification" else "sequence_output"]
        return self.dense(dropout(x, self.rate, dropout_rng)).astype(jnp.float32)


class BertForTasks(nnx.Module):
    """BERT encoder + named task heads. `tasks` maps a task name to (kind, num_labels)."""

    input_keys = ("input_ids", "token_type_ids", "attention_mask", "position_ids", "cls_positions")

    def __init__(self, cfg: BertConfig, tasks: dict[str, tuple[str, int]], rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertEncoder(cfg, rngs)
        self.heads = nnx.Dict({name: TaskHead(cfg, kind, n, rngs) for name, (kind, n) in tasks.items()})

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                 cls_positions=None, *, task: str, dropout_rng=None) -> dict:
        """Returns the encoder outputs plus 'logits' of the task's head (float32). Packed rows
        pass position_ids and cls_positions (see BertEncoder)."""
        encoder_rng = head_rng = None
        if dropout_rng is not None:
            encoder_rng, head_rng = jax.random.split(dropout_rng)
        out = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cls_positions,
                        dropout_rng=encoder_rng)
        out["logits"] = self.heads[task](out, head_rng)
        return out
