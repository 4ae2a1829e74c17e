"""Pretraining losses: masked language modelling, next-sentence prediction (BERT),
sentence-order prediction (ALBERT), and ELECTRA's generator masked LM and replaced-token
detection."""
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


@register("generator_mlm")
def generator_masked_lm_loss(outputs, batch):
    """ELECTRA's generator loss: `mlm` on outputs['generator_logits'] [batch, n_predictions, vocab].

    Its figures carry the generator_ prefix, since the generator is smaller than a BERT of the
    same size and its accuracy is no BERT's masked_lm_accuracy. generator_sample_accuracy: how
    often the sample is the original token (those positions count as not replaced)."""
    loss, metrics = masked_lm_loss({"masked_lm_logits": outputs["generator_logits"]}, batch)
    weights = batch["masked_lm_weights"].astype(jnp.float32)
    same = (outputs["generator_sample"] == batch["masked_lm_ids"]).astype(jnp.float32)
    return loss, {"generator_masked_lm_accuracy": metrics["masked_lm_accuracy"],
                  "generator_sample_accuracy": (same * weights).sum() / jnp.maximum(
                      weights.sum(), 1e-5)}


@register("rtd")
def replaced_token_detection_loss(outputs, batch):
    """ELECTRA's discriminator loss: mean sigmoid cross-entropy over every real token (batch
    'attention_mask' > 0, [CLS] and [SEP] included, as ELECTRA's input_mask), of
    outputs['rtd_logits'] [batch, seq] against outputs['rtd_labels'] [batch, seq] (1: replaced;
    the model makes them, since it draws the replacements).

    Figures over the real tokens: rtd_accuracy; rtd_precision and rtd_recall of "replaced" (a
    logit > 0 predicts replaced); rtd_replaced_fraction, the share of tokens replaced."""
    logits = outputs["rtd_logits"].astype(jnp.float32)
    labels = outputs["rtd_labels"].astype(jnp.float32)
    weights = (batch["attention_mask"] > 0).astype(jnp.float32)
    # -[z log sigmoid(x) + (1 - z) log sigmoid(-x)], stable for large |x|.
    per_token = -(labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))
    mean = lambda x, w: (x * w).sum() / jnp.maximum(w.sum(), 1e-5)
    predicted = (logits > 0).astype(jnp.float32)
    return mean(per_token, weights), {
        "rtd_accuracy": mean((predicted == labels).astype(jnp.float32), weights),
        "rtd_precision": mean(labels, predicted * weights),
        "rtd_recall": mean(predicted, labels * weights),
        "rtd_replaced_fraction": mean(labels, weights),
    }
