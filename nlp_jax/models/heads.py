"""Task layers on the BERT encoder: one encoder, one head per task (multi-task ready).

    classification        dropout -> dense on the pooled [CLS] vector   -> logits [batch, labels]
                          (single texts and sentence pairs alike: pairs differ only in token_type_ids;
                          packed rows: one per example, [batch, k, labels])
    regression            dropout -> dense on the pooled [CLS] vector   -> logits [batch] (one value)
    relation              dropout -> dense on [head start; tail start]  -> logits [batch, labels]
                          (the vectors at the entity markers, `entity_positions` [batch, 2])
    token_classification  dropout -> dense on every token's vector      -> logits [batch, seq, labels]
                          (crf=True: plus a linear-chain CRF's scores, outputs['crf'], for the
                          `crf` loss and Viterbi decoding in nlp_jax/losses/crf.py)
    question_answering    dropout -> dense on every token's vector      -> logits [batch, seq, 2]
                          (the answer's start and end scores at each position; extractive QA)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nlp_jax.models.bert import BertConfig, BertEncoder, _init, _zeros, dropout, gather_positions

KINDS = ("classification", "regression", "relation", "token_classification",
         "question_answering")
_SEQUENCE_KINDS = ("token_classification", "question_answering")   # a prediction per token


class CRF(nnx.Module):
    """Transition scores of a linear-chain CRF: transitions [from, to], start and end [tags].
    Zero at initialisation, so the CRF starts out decoding like the softmax head."""

    def __init__(self, num_tags: int):
        self.transitions = nnx.Param(jnp.zeros((num_tags, num_tags)))
        self.start = nnx.Param(jnp.zeros((num_tags,)))
        self.end = nnx.Param(jnp.zeros((num_tags,)))

    def __call__(self) -> dict:
        return {"transitions": self.transitions[...], "start": self.start[...],
                "end": self.end[...]}


class TaskHead(nnx.Module):
    def __init__(self, cfg: BertConfig, kind: str, num_labels: int, rngs: nnx.Rngs,
                 crf: bool = False):
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}: choose one of {KINDS}")
        if crf and kind != "token_classification":
            raise ValueError(f"a CRF is for token classification, not {kind}")
        self.kind, self.rate = kind, cfg.dropout_rate
        self.crf = CRF(num_labels) if crf else None
        num_labels = 2 if kind == "question_answering" else num_labels   # start, end
        width = 2 * cfg.hidden_size if kind == "relation" else cfg.hidden_size
        self.dense = nnx.Linear(width, num_labels, dtype=cfg.dtype,
                                kernel_init=_init(cfg, ("embed", None)),
                                bias_init=_zeros((None,)), rngs=rngs)

    def __call__(self, encoded: dict, dropout_rng=None) -> jax.Array:
        if self.kind == "relation":
            x = gather_positions(encoded["sequence_output"], encoded["entity_positions"])
            x = x.reshape(*x.shape[:-2], -1)          # [batch, 2 * hidden]: head start; tail start
        else:
            x = encoded["sequence_output" if self.kind in _SEQUENCE_KINDS else "pooled_output"]
        logits = self.dense(dropout(x, self.rate, dropout_rng)).astype(jnp.float32)
        return logits[..., 0] if self.kind == "regression" else logits


class BertForTasks(nnx.Module):
    """BERT encoder + named task heads. `tasks` maps a task name to (kind, num_labels) or
    (kind, num_labels, crf)."""

    input_keys = ("input_ids", "token_type_ids", "attention_mask", "position_ids", "cls_positions",
                  "entity_positions")

    def __init__(self, cfg: BertConfig, tasks: dict[str, tuple[str, int]], rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertEncoder(cfg, rngs)
        self.heads = nnx.Dict({name: TaskHead(cfg, *spec[:2], rngs, *spec[2:])
                               for name, spec in tasks.items()})

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                 cls_positions=None, entity_positions=None, *, task: str, dropout_rng=None
                 ) -> dict:
        """Returns the encoder outputs plus 'logits' of the task's head (float32). Packed rows
        pass position_ids and cls_positions (see BertEncoder); relation heads read
        entity_positions [batch, 2]."""
        encoder_rng = head_rng = None
        if dropout_rng is not None:
            encoder_rng, head_rng = jax.random.split(dropout_rng)
        out = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cls_positions,
                        dropout_rng=encoder_rng)
        head = self.heads[task]
        out["logits"] = head({**out, "entity_positions": entity_positions}, head_rng)
        if head.crf is not None:
            out["crf"] = head.crf()
        return out
