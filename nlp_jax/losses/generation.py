"""Generation losses: next-token cross-entropy for language models (`clm`) and teacher-forced
sequence-to-sequence models (`seq2seq`, with label smoothing through `config.loss_args`).

outputs['logits'] [batch, seq, vocab]; batch['labels'] [batch, seq] (the next token) and
batch['label_weights'] [batch, seq] (0 on padding and, in packed language-model rows, where the
next token begins another document). The loss is the mean over the weighted tokens;
`predicted_tokens`, their number, lets an evaluation pool batches into one exact per-token mean
(and perplexity)."""
from __future__ import annotations

import jax.numpy as jnp

from nlp_jax.losses.registry import register
from nlp_jax.losses.tasks import smoothed_cross_entropy


def next_token_loss(outputs, batch, label_smoothing: float = 0.0):
    logits, labels = outputs["logits"], batch["labels"]
    weights = batch["label_weights"].astype(jnp.float32)
    tokens = weights.sum()
    loss = (smoothed_cross_entropy(logits, labels, label_smoothing) * weights).sum()
    loss = loss / jnp.maximum(tokens, 1e-9)
    # As in the masked-LM loss: "the label's logit is the largest", without an argmax over the
    # vocabulary (only exact ties could differ).
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    correct = (label_logit >= logits.max(-1)).astype(jnp.float32)
    accuracy = (correct * weights).sum() / jnp.maximum(tokens, 1e-9)
    return loss, {"accuracy": accuracy, "predicted_tokens": tokens}


register("clm")(next_token_loss)
register("seq2seq")(next_token_loss)
