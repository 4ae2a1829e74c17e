"""Decoding: greedy search, beam search, and sampling (temperature, top-k, top-p), batched and
compiled, for the language model (`Decoder`) and the encoder-decoder (`Seq2Seq`) alike.

    out = generate(model, prompt_ids, prompt_mask, max_new_tokens=64, method="beam", num_beams=4,
                   eos_id=sep_id, pad_id=pad_id)
    out.tokens    [batch, max_new_tokens] int32: the new tokens, EOS kept, pad_id after it
    out.lengths   [batch] int32: new tokens up to and including EOS (max_new_tokens without one)
    out.log_prob  [batch] float32: the sum of their log-probabilities under the model
    out.score     [batch] float32: log_prob / length_penalty(lengths), the beam search objective

`model` is an nnx module or its `nnx.split` (graphdef, params). A language model continues the
prompt (left-padded: real tokens at the right, `prompt_mask` 1 / 0); a Seq2Seq model reads the
prompt as its source (`model.encode`) and its decoder starts from `bos_id` ([CLS]).

The whole search is one jitted function (the graphdef and the search's shape-deciding options are
static): one prefill call of the decoder over the prompt fills a fixed-size key/value cache of
prompt + max_new_tokens slots (`Decoder.init_cache`), then a `lax.while_loop` feeds one token per
step until every sequence has stopped or max_new_tokens are out. `use_cache=False` runs the same
loop but recomputes the whole prefix every step (a reference for the cache; same shapes each step).

Beam search follows T5X / the Flax WMT example: per step, the alive beams' running log-probability
plus the next token's log-probabilities, [batch, beams x vocab], and one top-k of 2 x beams
candidates (so that at least `beams` remain that did not just end in EOS); those ending in EOS join
the finished pool, scored with the GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al.,
2016; T5X's brevity penalty; Hugging Face divides by length ** alpha instead), the others are the
new alive beams, and the cache rows are gathered along the batch x beams axis to follow them.
At max_new_tokens the alive beams are scored too (Hugging Face's finalisation), and the search
stops early once no alive beam can still beat the best finished one. The best beam is returned.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

METHODS = ("greedy", "beam", "sample")
NEG_INF = -1.0e7   # finite "impossible" score: arithmetic on it stays finite (no inf - inf = nan)


class Decoded(NamedTuple):
    tokens: jax.Array     # [batch, new] int32
    lengths: jax.Array    # [batch] int32
    log_prob: jax.Array   # [batch] float32
    score: jax.Array      # [batch] float32


@dataclasses.dataclass(frozen=True)
class _Static:
    """What decides the compiled program's shapes and control flow (jit static arguments)."""
    method: str
    max_new_tokens: int
    num_beams: int
    top_k: int
    top_p: float
    use_cache: bool


def length_penalty(length: jax.Array, alpha) -> jax.Array:
    """GNMT's ((5 + length) / 6) ** alpha; alpha = 0: plain log-probabilities."""
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def generate(model, prompt_ids, prompt_mask=None, *, max_new_tokens: int, method: str = "greedy",
             num_beams: int = 4, length_penalty_alpha: float = 0.6, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_id: int | None = None, pad_id: int = 0,
             bos_id: int | None = None, rng: jax.Array | None = None,
             use_cache: bool = True) -> Decoded:
    """Decodes up to max_new_tokens new tokens per prompt; see the module docstring.

    model: a `Decoder` / `Seq2Seq` module, or (graphdef, params) from `nnx.split`.
    prompt_ids [batch, prompt] int, prompt_mask [batch, prompt] 1 / 0 (default all 1): a language
      model's prompt, left-padded (each row needs one real token); a Seq2Seq model's source
      (padding anywhere).
    method: 'greedy'; 'beam' (num_beams, length_penalty_alpha); 'sample' (temperature, then top_k
      > 0 keeps the k likeliest tokens, top_p < 1 the smallest set of probability >= top_p; rng:
      a key, the same key giving the same tokens).
    eos_id: stops a sequence (None: never); the tokens after it are pad_id.
    bos_id: Seq2Seq only, the decoder's first input (the tokenizer's [CLS]).
    use_cache: False recomputes the whole prefix each step (the uncached reference).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    if isinstance(model, nnx.Module):
        graphdef, params = nnx.split(model)
        params = nnx.to_pure_dict(params)
    else:
        graphdef, params = model
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    prompt_mask = (jnp.ones_like(prompt_ids) if prompt_mask is None
                   else jnp.asarray(prompt_mask, jnp.int32))
    static = _Static(method, int(max_new_tokens), int(num_beams) if method == "beam" else 1,
                     int(top_k), float(top_p), bool(use_cache))
    # Numbers that only enter arithmetic are traced, so changing them does not recompile.
    knobs = {"alpha": jnp.float32(length_penalty_alpha), "temperature": jnp.float32(temperature),
             "eos": jnp.int32(-1 if eos_id is None else eos_id), "pad": jnp.int32(pad_id),
             "bos": jnp.int32(0 if bos_id is None else bos_id)}
    if rng is None:
        rng = jax.random.key(0)
    return _generate(graphdef, params, prompt_ids, prompt_mask, rng, knobs, static=static)


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _generate(graphdef, params, prompt_ids, prompt_mask, rng, knobs, *, static: _Static):
    model = nnx.merge(graphdef, params)
    if hasattr(model, "encode"):       # Seq2Seq: the prompt is the source; decode from BOS
        memory = model.encode(prompt_ids, prompt_mask)
        decoder = model.decoder
        batch = prompt_ids.shape[0]
        prompt_ids = jnp.full((batch, 1), knobs["bos"], jnp.int32)
        prompt_mask = jnp.ones((batch, 1), jnp.int32)
    else:
        memory, decoder = None, model
    lm = _CachedLM if static.use_cache else _UncachedLM
    lm = lm(decoder, memory, prompt_ids, prompt_mask, static.max_new_tokens)
    if static.method == "beam":
        return _beam_search(lm, knobs, static)
    return _greedy_or_sample(lm, rng, knobs, static)


# ---------------------------------------------------------------------------------------------
# The model as a next-token distribution over a growing prefix. A state is a pytree whose arrays
# all lead with the batch (x beams) axis, so beam search reorders it with one gather.

def _positions(mask: jax.Array) -> jax.Array:
    """Left-padded rows: a real token's position is the number of real tokens before it."""
    return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)


class _CachedLM:
    """Prefill the prompt into a cache of prompt + new slots; then one token per call. The state
    is the cache; the slot mask and positions are per example (`repeat` copies them per beam),
    so a beam reorder gathers the cache alone. A seq2seq memory stays one per example: the
    beams of an example read it together (see bert.CrossAttention)."""

    def __init__(self, decoder, memory, prompt_ids, prompt_mask, new: int):
        self.decoder, self.memory, self.prompt_ids = decoder, memory, prompt_ids
        batch = prompt_ids.shape[0]
        # Slots of new tokens are always real; slots ahead of a query are hidden by causality.
        self.slot_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, new), jnp.int32)], 1)
        self.prompt_pos = _positions(prompt_mask)
        self.real = prompt_mask.sum(1)                         # [batch]: real prompt tokens

    def prefill(self):
        """-> (logits [batch, vocab] of the first new token, state)."""
        cache = self.decoder.init_cache(self.prompt_ids.shape[0], self.slot_mask.shape[1])
        out = self.decoder(self.prompt_ids, self.slot_mask, self.prompt_pos, memory=self.memory,
                           cache=cache, last_only=True)
        return out["logits"][:, -1], out["cache"]

    def repeat(self, k: int):
        """Each example's constants k times in a row (after `prefill`, for k beams)."""
        self.slot_mask, self.real = _repeat_rows((self.slot_mask, self.real), k)

    def step(self, cache, token, i):
        """token [batch]: the i-th new token (0-based) -> logits [batch, vocab] of the next."""
        out = self.decoder(token[:, None], self.slot_mask, (self.real + i)[:, None],
                           memory=self.memory, cache=cache)
        return out["logits"][:, 0], out["cache"]


class _UncachedLM:
    """The reference: a buffer of prompt + new tokens (the state), the whole of it run through
    the model every step (causal mask and positions as in the cached path), read at one position."""

    def __init__(self, decoder, memory, prompt_ids, prompt_mask, new: int):
        self.decoder, self.memory = decoder, memory
        batch, self.prompt_len = prompt_ids.shape
        self.buffer = jnp.concatenate([prompt_ids, jnp.zeros((batch, new), jnp.int32)], 1)
        self.mask = jnp.concatenate([prompt_mask, jnp.ones((batch, new), jnp.int32)], 1)

    def _logits_at(self, buffer, t):
        logits = self.decoder(buffer, self.mask, _positions(self.mask),
                              memory=self.memory)["logits"]
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)

    def prefill(self):
        return self._logits_at(self.buffer, self.prompt_len - 1), self.buffer

    def repeat(self, k: int):
        self.mask = _repeat_rows(self.mask, k)

    def step(self, buffer, token, i):
        t = self.prompt_len + i
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, token, t, axis=1)
        return self._logits_at(buffer, t), buffer


def _gather_rows(tree, rows: jax.Array):
    """Every array of `tree` (the cache's scalar index aside) at the given leading-axis rows."""
    return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, rows, axis=0), tree)


def _repeat_rows(tree, k: int):
    """Each row k times in a row: [batch, ...] -> [batch * k, ...] (beam b of row r: r * k + b)."""
    return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, k, axis=0), tree)


# ---------------------------------------------------------------------------------------------
# Greedy search and sampling: one token per sequence per step.

def _filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Top-k, then nucleus (top-p; Holtzman et al., 2020) filtering: dropped tokens get -inf."""
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token while the tokens likelier than it hold < top_p (the first always stays).
        before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _greedy_or_sample(lm, rng, knobs, static: _Static) -> Decoded:
    new = static.max_new_tokens
    logits, model_state = lm.prefill()
    batch = logits.shape[0]

    def choose(carry, logits):
        i = carry["i"]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        if static.method == "greedy":
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            scaled = _filter_logits(logits / knobs["temperature"], static.top_k, static.top_p)
            token = jax.random.categorical(jax.random.fold_in(rng, i), scaled).astype(jnp.int32)
        done = carry["done"]
        token_lp = jnp.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
        token = jnp.where(done, knobs["pad"], token)
        return {"i": i + 1,
                "tokens": carry["tokens"].at[:, i].set(token),
                "log_prob": carry["log_prob"] + jnp.where(done, 0.0, token_lp),
                "lengths": carry["lengths"] + (~done).astype(jnp.int32),
                "done": done | (token == knobs["eos"]),
                "model": carry["model"]}

    carry = {"i": jnp.int32(0), "tokens": jnp.full((batch, new), knobs["pad"], jnp.int32),
             "log_prob": jnp.zeros((batch,), jnp.float32),
             "lengths": jnp.zeros((batch,), jnp.int32), "done": jnp.zeros((batch,), bool),
             "model": model_state}
    carry = choose(carry, logits)

    def cond(carry):
        return (carry["i"] < new) & ~jnp.all(carry["done"])

    def body(carry):
        i = carry["i"]
        logits, model_state = lm.step(carry["model"], carry["tokens"][:, i - 1], i - 1)
        return choose({**carry, "model": model_state}, logits)

    carry = jax.lax.while_loop(cond, body, carry)
    score = carry["log_prob"] / length_penalty(carry["lengths"], knobs["alpha"])
    return Decoded(carry["tokens"], carry["lengths"], carry["log_prob"], score)


# ---------------------------------------------------------------------------------------------
# Beam search.

def _beam_search(lm, knobs, static: _Static) -> Decoded:
    new, k = static.max_new_tokens, static.num_beams
    alpha, eos = knobs["alpha"], knobs["eos"]
    logits, model_state = lm.prefill()                 # once per example, then copied per beam
    batch, vocab = logits.shape
    if 2 * k > k * vocab:
        raise ValueError(f"num_beams={k} needs a vocabulary of at least 2 tokens")
    log_probs = jnp.repeat(jax.nn.log_softmax(logits, -1)[:, None], k, axis=1)
    model_state = _repeat_rows(model_state, k)
    lm.repeat(k)
    empty = jnp.full((batch, k, new), knobs["pad"], jnp.int32)
    carry = {
        "i": jnp.int32(0),
        "alive_seqs": empty,
        # Only beam 0 is alive at the start, so the first step does not pick one token k times.
        "alive_logp": jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1)),
        "finished_seqs": empty,
        "finished_logp": jnp.zeros((batch, k), jnp.float32),
        "finished_score": jnp.full((batch, k), NEG_INF, jnp.float32),
        "model": model_state,
    }

    def take(x, idx):                                   # x [batch, n, ...], idx [batch, m]
        return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def choose(carry, log_probs):
        """log_probs [batch, k, vocab] of the alive beams' next token -> the next carry."""
        i = carry["i"]
        candidates = (carry["alive_logp"][:, :, None] + log_probs).reshape(batch, k * vocab)
        top_logp, top_idx = jax.lax.top_k(candidates, 2 * k)
        top_beam, top_token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        top_seqs = take(carry["alive_seqs"], top_beam).at[:, :, i].set(top_token)
        ended = top_token == eos
        # The alive: the best k candidates that did not just end.
        alive_logp, alive_idx = jax.lax.top_k(jnp.where(ended, NEG_INF, top_logp), k)
        origin = take(top_beam, alive_idx)              # [batch, k]: the beam each continues
        # The finished: the best k of the pool and the candidates that just ended.
        ended_score = jnp.where(ended, top_logp / length_penalty(i + 1, alpha), NEG_INF)
        pool_score = jnp.concatenate([carry["finished_score"], ended_score], 1)
        pool_logp = jnp.concatenate([carry["finished_logp"], top_logp], 1)
        pool_seqs = jnp.concatenate([carry["finished_seqs"], top_seqs], 1)
        finished_score, finished_idx = jax.lax.top_k(pool_score, k)
        rows = (jnp.arange(batch)[:, None] * k + origin).reshape(-1)
        return {"i": i + 1, "alive_seqs": take(top_seqs, alive_idx), "alive_logp": alive_logp,
                "finished_seqs": take(pool_seqs, finished_idx),
                "finished_logp": take(pool_logp, finished_idx), "finished_score": finished_score,
                "model": _gather_rows(carry["model"], rows)}

    carry = choose(carry, log_probs)

    def cond(carry):
        i = carry["i"]
        # An alive beam's log-probability can only fall; its best final score is that over the
        # smallest or the largest penalty still ahead (which one depends on alpha's sign).
        logp = carry["alive_logp"]
        best_alive = jnp.maximum(logp / length_penalty(i + 1, alpha),
                                 logp / length_penalty(jnp.int32(new), alpha))
        best_alive = jnp.where(logp > NEG_INF / 2, best_alive, -jnp.inf).max(1)
        best_finished = jnp.where(carry["finished_score"] > NEG_INF / 2,
                                  carry["finished_score"], -jnp.inf).max(1)
        return (i < new) & ~jnp.all(best_alive <= best_finished)

    def body(carry):
        i = carry["i"]
        tokens = carry["alive_seqs"][:, :, i - 1].reshape(-1)
        logits, model_state = lm.step(carry["model"], tokens, i - 1)
        log_probs = jax.nn.log_softmax(logits, -1).reshape(batch, k, vocab)
        return choose({**carry, "model": model_state}, log_probs)

    carry = jax.lax.while_loop(cond, body, carry)
    # Beams still alive at max_new_tokens are complete hypotheses too; after an early stop they
    # are not (and cannot win). Finished ones come first, so a tie keeps the finished.
    full = carry["i"] >= new
    alive_score = jnp.where(full & (carry["alive_logp"] > NEG_INF / 2),
                            carry["alive_logp"] / length_penalty(jnp.int32(new), alpha), NEG_INF)
    scores = jnp.concatenate([carry["finished_score"], alive_score], 1)
    best = jnp.argmax(scores, axis=1)[:, None]
    seqs = jnp.concatenate([carry["finished_seqs"], carry["alive_seqs"]], 1)
    logp = jnp.concatenate([carry["finished_logp"], carry["alive_logp"]], 1)
    tokens = take(seqs, best)[:, 0]
    is_eos = tokens == eos
    lengths = jnp.where(is_eos.any(1), jnp.argmax(is_eos, 1) + 1, new).astype(jnp.int32)
    return Decoded(tokens, lengths, take(logp, best)[:, 0], take(scores, best)[:, 0])
