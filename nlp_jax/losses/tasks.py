"""Fine-tuning losses: classification (texts and sentence pairs), prompts (the masked-LM head as
the classifier), regression, token classification (NER) and answer spans (extractive QA).

Both take `label_smoothing` (set through `config.loss_args`) and respect `example_weights`
(0 on the rows that pad the last evaluation batch) and, for tokens, `label_weights`
(0 on [CLS], [SEP] and padding).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from nlp_jax.losses.registry import register


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0):
    """Cross-entropy against (1 - s) * one_hot + s / classes. logits [..., C], labels [...]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    if label_smoothing == 0.0:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(-1)


def _weighted_mean(values, weights):
    return (values * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


@register("classification")
def classification_loss(outputs, batch, label_smoothing: float = 0.0):
    """outputs['logits'] [batch, labels]; batch['labels'] [batch]. Packed rows (several examples
    per row): logits [batch, k, labels], labels and label_weights [batch, k] (0 on empty slots)."""
    logits, labels = outputs["logits"], batch["labels"]
    if "label_weights" in batch:
        weights = batch["label_weights"].astype(jnp.float32)
    else:
        weights = batch.get("example_weights", jnp.ones(labels.shape, jnp.float32))
    loss = _weighted_mean(smoothed_cross_entropy(logits, labels, label_smoothing), weights)
    accuracy = _weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)
    return loss, {"accuracy": accuracy}


@register("prompt")
def prompt_loss(outputs, batch, label_smoothing: float = 0.0):
    """Prompt-based fine-tuning (PET's L_CE; LM-BFF): cross-entropy of the gold label under the
    softmax over the labels of their verbalizer scores, outputs['logits'] [batch, labels] (the
    summed masked-LM log-probabilities of each label's word, `heads.PromptHead`); batch['labels']
    [batch]. The classification loss on those scores: the masked-LM head is the classifier."""
    return classification_loss(outputs, batch, label_smoothing)


@register("regression")
def regression_loss(outputs, batch):
    """Mean squared error. outputs['logits'] [batch] (packed rows: [batch, k], with
    label_weights); batch['labels'] float [batch]."""
    predictions, labels = outputs["logits"], batch["labels"].astype(jnp.float32)
    if "label_weights" in batch:
        weights = batch["label_weights"].astype(jnp.float32)
    else:
        weights = batch.get("example_weights", jnp.ones(labels.shape, jnp.float32))
    return _weighted_mean((predictions - labels) ** 2, weights), {}


@register("token_classification")
def token_classification_loss(outputs, batch, label_smoothing: float = 0.0):
    """outputs['logits'] [batch, seq, labels]; batch['labels'], batch['label_weights'] [batch, seq]."""
    logits, labels = outputs["logits"], batch["labels"]
    weights = batch["label_weights"].astype(jnp.float32)
    if "example_weights" in batch:
        weights = weights * batch["example_weights"][:, None]
    loss = _weighted_mean(smoothed_cross_entropy(logits, labels, label_smoothing), weights)
    accuracy = _weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)
    return loss, {"token_accuracy": accuracy}


@register("span")
def span_loss(outputs, batch):
    """Extractive QA: the mean of the start and the end position's cross-entropy over the row's
    tokens (padding excluded), as BERT's run_squad.py. outputs['logits'] [batch, seq, 2];
    batch['start_positions'], ['end_positions'] [batch] (0 = [CLS]: no answer in the row)."""
    logits = outputs["logits"].astype(jnp.float32)
    logits = jnp.where(batch["attention_mask"][..., None] > 0, logits, -1e9)
    weights = batch.get("example_weights", jnp.ones(logits.shape[:1], jnp.float32))
    start, end = batch["start_positions"], batch["end_positions"]
    nll = (smoothed_cross_entropy(logits[..., 0], start) +
           smoothed_cross_entropy(logits[..., 1], end)) / 2
    exact = (jnp.argmax(logits[..., 0], -1) == start) & (jnp.argmax(logits[..., 1], -1) == end)
    return _weighted_mean(nll, weights), {"span_accuracy": _weighted_mean(exact.astype(jnp.float32),
                                                                          weights)}
