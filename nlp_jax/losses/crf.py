"""A linear-chain CRF over token tags (Lafferty et al. 2001), as NER heads use it on BERT: the loss
(`crf`, the negative log-likelihood of the gold tags) and Viterbi decoding.

    score(y) = start[y_1] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_T]
    log p(y | x) = score(y) - log sum_y' exp score(y')

The chain runs over the positions whose `mask` is 1, in order; masked positions ([CLS], [SEP],
padding, and pieces that cover no character) are skipped, not scored, so the transition links the
neighbouring real positions. Both the forward algorithm (log partition) and Viterbi are a
`jax.lax.scan` over the sequence, batched. The scores (`transitions`, `start`, `end`) are
parameters of the task head (`models/heads.py`), passed in as the dict `crf`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from nlp_jax.losses.registry import register


def _first_and_last(mask):
    """Whether each position is the first / the last real one of its row. mask [B, T] bool."""
    before = jnp.cumsum(mask, axis=1) - mask          # real positions before t
    after = jnp.cumsum(mask[:, ::-1], axis=1)[:, ::-1] - mask
    return mask & (before == 0), mask & (after == 0)


def sequence_score(emissions, tags, mask, crf: dict):
    """score(tags) [B]. emissions [B, T, L] float, tags [B, T] int, mask [B, T]."""
    mask = mask.astype(bool)
    first, last = _first_and_last(mask)
    emit = jnp.take_along_axis(emissions, tags[..., None], -1)[..., 0]
    # The previous real tag at every position (carried over masked ones).
    def prev_tag(carry, xs):
        tag, m = xs
        return jnp.where(m, tag, carry), carry
    _, previous = jax.lax.scan(prev_tag, tags[:, 0], (tags.T, mask.T))
    trans = crf["transitions"][previous.T, tags]
    score = jnp.where(mask, emit, 0.0) + jnp.where(mask & ~first, trans, 0.0)
    score += jnp.where(first, crf["start"][tags], 0.0) + jnp.where(last, crf["end"][tags], 0.0)
    return score.sum(1)


def log_partition(emissions, mask, crf: dict):
    """log sum_y exp score(y) [B], by the forward algorithm; 0 for a row with no real position."""
    mask = mask.astype(bool)
    first, _ = _first_and_last(mask)
    trans = crf["transitions"]

    def step(alpha, xs):      # alpha [B, L]: log-sum of the paths ending in each tag so far
        emit, m, f = xs
        moved = jax.nn.logsumexp(alpha[:, :, None] + trans[None], axis=1) + emit
        new = jnp.where(f[:, None], crf["start"][None] + emit, moved)
        return jnp.where(m[:, None], new, alpha), None

    B, _, L = emissions.shape
    # Replaced at each row's first real position; finite, so that no gradient meets -inf - -inf.
    alpha0 = jnp.zeros((B, L), emissions.dtype)
    alpha, _ = jax.lax.scan(step, alpha0, (emissions.swapaxes(0, 1), mask.T, first.T))
    out = jax.nn.logsumexp(alpha + crf["end"][None], axis=1)
    return jnp.where(mask.any(1), out, 0.0)


def log_likelihood(emissions, tags, mask, crf: dict):
    """log p(tags | emissions) [B] (0 for a row with no real position)."""
    emissions = emissions.astype(jnp.float32)
    return sequence_score(emissions, tags, mask, crf) - log_partition(emissions, mask, crf)


def viterbi(emissions, mask, crf: dict):
    """The best tag sequence [B, T] int32 (masked positions get the tag of the previous real one,
    which no caller reads)."""
    emissions = emissions.astype(jnp.float32)
    mask = mask.astype(bool)
    first, _ = _first_and_last(mask)
    trans = crf["transitions"]
    B, T, L = emissions.shape

    def forward(delta, xs):
        emit, m, f = xs
        cand = delta[:, :, None] + trans[None]                      # [B, from, to]
        best_prev = jnp.argmax(cand, axis=1)
        new = jnp.where(f[:, None], crf["start"][None] + emit, cand.max(1) + emit)
        # A masked position keeps delta and points every tag back to itself.
        back = jnp.where(m[:, None] & ~f[:, None], best_prev, jnp.arange(L)[None])
        return jnp.where(m[:, None], new, delta), back

    delta, backs = jax.lax.scan(forward, jnp.zeros((B, L)),
                                (emissions.swapaxes(0, 1), mask.T, first.T))
    last_tag = jnp.argmax(delta + crf["end"][None], axis=1)

    def backward(tag, back):       # walk the pointers from the end
        return back[jnp.arange(B), tag], tag

    _, path = jax.lax.scan(backward, last_tag, backs[::-1])
    return path[::-1].T.astype(jnp.int32)


@register("crf")
def crf_loss(outputs, batch):
    """Mean negative log-likelihood per example of the gold tags under the head's CRF.
    outputs['logits'] [batch, seq, tags] (emissions), outputs['crf']; batch['labels'],
    batch['label_weights'] [batch, seq] (the chain runs where label_weights > 0)."""
    mask = batch["label_weights"] > 0
    weights = batch.get("example_weights", jnp.ones(mask.shape[:1], jnp.float32))
    weights = weights * mask.any(1)
    nll = -log_likelihood(outputs["logits"], batch["labels"], mask, outputs["crf"])
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1e-9), {}
