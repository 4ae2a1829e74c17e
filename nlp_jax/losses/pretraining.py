"""Pretraining losses: masked language modelling, next-sentence prediction (BERT) and
sentence-order prediction (ALBERT)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from nlp_jax.losses.registry import register


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example negative log-likelihood. logits: [..., classes] float, labels: [...] int."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


@register("mlm")
def masked_lm_loss(outputs, batch):
    """Mean cross-entropy over the real masked positions (masked_lm_weights = 1), as in BERT.

    outputs['masked_lm_logits']: [batch, n_predictions, vocab]; batch['masked_lm_ids'],
    batch['masked_lm_weights']: [batch, n_predictions]."""
    logits = outputs["masked_lm_logits"]
    ids, weights = batch["masked_lm_ids"], batch["masked_lm_weights"].astype(jnp.float32)
    denom = jnp.maximum(weights.sum(), 1e-5)
    loss = (cross_entropy(logits, ids) * weights).sum() / denom
    # "The label's logit is the largest" is argmax == label without an index reduction over the
    # vocabulary (cheaper on CPU); only exact ties could differ.
    label_logit = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
    correct = (label_logit >= logits.max(-1)).astype(jnp.float32)
    return loss, {"masked_lm_accuracy": (correct * weights).sum() / denom}


@register("nsp")
def next_sentence_loss(outputs, batch):
    """Mean cross-entropy of IsNext (0) / NotNext (1). logits: [batch, 2]; labels: [batch].

    Packed rows: logits [batch, k, 2], labels and next_sentence_weights [batch, k]; the mean is
    over the real instances (weight 1), so it equals the loss of the same instances unpacked."""
    loss, accuracy = _weighted_pair_loss(outputs["next_sentence_logits"],
                                         batch["next_sentence_labels"],
                                         batch.get("next_sentence_weights"))
    return loss, {"next_sentence_accuracy": accuracy}


@register("sop")
def sentence_order_loss(outputs, batch):
    """ALBERT's sentence-order prediction: mean cross-entropy of in order (0) / swapped (1).

    outputs['sentence_order_logits'] [batch, 2] (packed: [batch, k, 2]); batch
    'sentence_order_labels' and 'sentence_order_weights' [batch] ([batch, k]); the weights are 0 on
    empty slots and, with data.sentence_task=both, on pairs whose B comes from another document
    (no order to predict)."""
    loss, accuracy = _weighted_pair_loss(outputs["sentence_order_logits"],
                                         batch["sentence_order_labels"],
                                         batch.get("sentence_order_weights"))
    return loss, {"sentence_order_accuracy": accuracy}


def _weighted_pair_loss(logits, labels, weights):
    """(mean cross-entropy, accuracy) over the weighted instances (weights None: all count)."""
    weights = jnp.ones(labels.shape) if weights is None else weights.astype(jnp.float32)
    denom = jnp.maximum(weights.sum(), 1e-5)
    loss = (cross_entropy(logits, labels) * weights).sum() / denom
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return loss, (correct * weights).sum() / denom
