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
    prompt                the masked-LM head at the prompt's masks      -> logits [batch, labels]
                          (PET / LM-BFF: each label's verbalizer score, `PromptHead`)

A prompt task's head is BERT's pretrained masked-LM head, held once by the model under the names
BertForPreTraining gives it (mlm_transform, mlm_layer_norm, mlm_bias; the decoder is tied to the
word embeddings), so a pretraining checkpoint or a Hugging Face BertForPreTraining loads into it
as it is and several prompt tasks share it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nlp_jax.models.bert import (BertConfig, BertEncoder, _init, _zeros, dropout, gather_positions,
                                 masked_lm_logits, masked_lm_weights)

KINDS = ("classification", "regression", "relation", "token_classification",
         "question_answering")
PROMPT = "prompt"   # a head spec (PROMPT, num_labels, verbalizer): see PromptHead
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


class PromptHead(nnx.Module):
    """Label scores from the masked-LM head at a prompt's masks (PET; Schick and Schütze 2021).

    `verbalizer` [labels][num_masks]: the piece ids of each label's word, one per mask. Label l's
    score is the sum over the masks j of log p_MLM(verbalizer[l][j] | mask j), the log-softmax
    over the whole vocabulary of the masked-LM logits there. With one mask this is PET's score
    up to a constant: PET takes the word's logit, and the log-normaliser is the same for every
    label, so a softmax over the labels (the loss, the predicted probabilities) is the same. With
    several masks it is the natural extension that keeps that property: all masks are predicted
    at once, independently, and every word fills all of them (no iterative decoding as in PET's
    multi-token variant). The head holds no weights of its own: the masked-LM head is the
    model's."""

    def __init__(self, num_labels: int, verbalizer):
        self.verbalizer = tuple(tuple(int(i) for i in word) for word in verbalizer)
        if len(self.verbalizer) != num_labels or len({len(w) for w in self.verbalizer}) != 1:
            raise ValueError(f"a prompt head needs one word of as many pieces per label; got "
                             f"{self.verbalizer} for {num_labels} labels")
        self.crf = None

    def __call__(self, log_probs: jax.Array) -> jax.Array:
        """log_probs [batch, num_masks, vocab] -> label scores [batch, labels] (float32)."""
        ids = jnp.asarray(self.verbalizer, jnp.int32).T                  # [num_masks, labels]
        ids = jnp.broadcast_to(ids, (log_probs.shape[0], *ids.shape))
        return jnp.take_along_axis(log_probs, ids, axis=-1).sum(axis=1)


class BertForTasks(nnx.Module):
    """BERT encoder + named task heads. `tasks` maps a task name to (kind, num_labels),
    (kind, num_labels, crf) or (PROMPT, num_labels, verbalizer); with a prompt task the model also
    holds BERT's masked-LM head (mlm_transform, mlm_layer_norm, mlm_bias, as BertForPreTraining)."""

    input_keys = ("input_ids", "token_type_ids", "attention_mask", "position_ids", "cls_positions",
                  "entity_positions", "mask_positions")

    def __init__(self, cfg: BertConfig, tasks: dict[str, tuple[str, int]], rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertEncoder(cfg, rngs)
        self.heads = nnx.Dict({name: PromptHead(*spec[1:]) if spec[0] == PROMPT else
                               TaskHead(cfg, *spec[:2], rngs, *spec[2:])
                               for name, spec in tasks.items()})
        if any(spec[0] == PROMPT for spec in tasks.values()):
            # Created last: the other heads draw what they always drew.
            self.mlm_transform, self.mlm_layer_norm, self.mlm_bias = masked_lm_weights(cfg, rngs)
        else:
            self.mlm_transform = self.mlm_layer_norm = self.mlm_bias = None

    def masked_lm_log_probs(self, x: jax.Array) -> jax.Array:
        """BERT's masked-LM head: x [..., hidden] -> log-probabilities [..., vocab] (float32);
        dense -> GELU -> LayerNorm -> the word embeddings (tied) + bias, as BertForPreTraining."""
        logits = masked_lm_logits(self, self.bert.embeddings.word_embeddings, x)
        return jax.nn.log_softmax(logits, axis=-1)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                 cls_positions=None, entity_positions=None, mask_positions=None, *, task: str,
                 dropout_rng=None) -> dict:
        """Returns the encoder outputs plus 'logits' of the task's head (float32). Packed rows
        pass position_ids and cls_positions (see BertEncoder); relation heads read
        entity_positions [batch, 2]; prompt heads mask_positions [batch, num_masks]."""
        encoder_rng = head_rng = None
        if dropout_rng is not None:
            encoder_rng, head_rng = jax.random.split(dropout_rng)
        out = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cls_positions,
                        dropout_rng=encoder_rng)
        head = self.heads[task]
        if isinstance(head, PromptHead):   # as in pretraining: no dropout before the MLM head
            out["logits"] = head(self.masked_lm_log_probs(
                gather_positions(out["sequence_output"], mask_positions)))
        else:
            out["logits"] = head({**out, "entity_positions": entity_positions}, head_rng)
        if head.crf is not None:
            out["crf"] = head.crf()
        return out
