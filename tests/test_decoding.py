"""Decoding (nlp_jax/models/decoding.py): the cached search against the uncached one and a
hand-written loop, beam search against an exhaustive search, sampling's seeds and filters, EOS.

Random tiny models with a wide initialisation (initializer_range 0.1, not 0.02), so that next-token
distributions are peaked and greedy/beam choices are not decided by float noise; one model of each
kind per module, few compiled shapes (each generate() shape compiles once)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nlp_jax.models.bert import BertConfig
from nlp_jax.models.decoder import Decoder, Seq2Seq
from nlp_jax.models.decoding import _filter_logits, generate, length_penalty

VOCAB, NEW = 13, 5
# Left-padded prompts of 5, 3 and 1 real tokens.
PROMPT = jnp.array([[3, 4, 5, 6, 7], [0, 0, 8, 2, 9], [0, 0, 0, 0, 11]], jnp.int32)
PROMPT_MASK = jnp.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], jnp.int32)


def tiny(vocab=VOCAB, **kw):
    return BertConfig.from_preset("tiny", vocab_size=vocab, num_layers=1, hidden_size=32,
                                  num_heads=2, intermediate_size=64, max_position_embeddings=32,
                                  initializer_range=0.1, **kw)


@pytest.fixture(scope="module")
def lm():
    return Decoder(tiny(position_embedding="rotary"), nnx.Rngs(0))


@pytest.fixture(scope="module")
def s2s():
    return Seq2Seq(tiny(), nnx.Rngs(1))     # absolute positions: the other embedding


def python_greedy(model, prompt, mask, new):
    """Greedy decoding the slow, obvious way: per example, drop the padding, run the model on the
    whole prefix, append the argmax. (The prefix sits at the left of a fixed-size row, so one
    compiled call serves every step: the causal mask hides what follows it.)"""
    call = jax.jit(lambda x: model(x)["logits"][0])
    out = []
    for ids, m in zip(np.asarray(prompt), np.asarray(mask)):
        seq = list(ids[m > 0])
        for _ in range(new):
            row = np.zeros((1, prompt.shape[1] + new), np.int32)
            row[0, :len(seq)] = seq
            seq.append(int(jnp.argmax(call(jnp.asarray(row))[len(seq) - 1])))
        out.append(seq[-new:])
    return np.array(out)


def test_lm_greedy_cached_equals_uncached_and_a_python_loop(lm):
    cached = generate(lm, PROMPT, PROMPT_MASK, max_new_tokens=NEW)
    uncached = generate(lm, PROMPT, PROMPT_MASK, max_new_tokens=NEW, use_cache=False)
    np.testing.assert_array_equal(cached.tokens, python_greedy(lm, PROMPT, PROMPT_MASK, NEW))
    np.testing.assert_array_equal(cached.tokens, uncached.tokens)
    np.testing.assert_allclose(cached.log_prob, uncached.log_prob, rtol=1e-5)
    assert len(set(np.asarray(cached.tokens).ravel().tolist())) > 2   # not one repeated token
    assert (cached.lengths == NEW).all() and (cached.log_prob < 0).all()


def test_lm_beam_cached_equals_uncached(lm):
    kw = dict(max_new_tokens=NEW, method="beam", num_beams=3, eos_id=2, length_penalty_alpha=0.6)
    cached = generate(lm, PROMPT, PROMPT_MASK, **kw)
    uncached = generate(lm, PROMPT, PROMPT_MASK, use_cache=False, **kw)
    np.testing.assert_array_equal(cached.tokens, uncached.tokens)
    np.testing.assert_allclose(cached.score, uncached.score, rtol=1e-5)
    np.testing.assert_allclose(cached.score,
                               cached.log_prob / length_penalty(cached.lengths, 0.6), rtol=1e-6)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_seq2seq_cached_equals_uncached(s2s, method):
    # The prompt is the source (padding on the left here; any side is fine for the encoder).
    kw = dict(max_new_tokens=NEW, method=method, num_beams=3, bos_id=1)
    cached = generate(s2s, PROMPT, PROMPT_MASK, **kw)
    uncached = generate(s2s, PROMPT, PROMPT_MASK, use_cache=False, **kw)
    np.testing.assert_array_equal(cached.tokens, uncached.tokens)
    np.testing.assert_allclose(cached.log_prob, uncached.log_prob, rtol=1e-5)
    if method == "greedy":   # the decoder starts from BOS and reads the source
        model = jax.jit(lambda ids: s2s(PROMPT, PROMPT_MASK, ids)["logits"])
        seq = jnp.zeros((3, NEW + 1), jnp.int32).at[:, 0].set(1)   # fixed size, as above
        for t in range(NEW):
            seq = seq.at[:, t + 1].set(jnp.argmax(model(seq)[:, t], -1))
        np.testing.assert_array_equal(cached.tokens, seq[:, 1:])


def test_beam_size_one_is_greedy(lm):
    # With alpha = 0 a hypothesis that ends is never beaten by a longer one, so one beam makes
    # greedy's choices, EOS included.
    kw = dict(max_new_tokens=NEW, eos_id=2, length_penalty_alpha=0.0)
    greedy = generate(lm, PROMPT, PROMPT_MASK, **kw)
    beam = generate(lm, PROMPT, PROMPT_MASK, method="beam", num_beams=1, **kw)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_allclose(beam.log_prob, greedy.log_prob, rtol=1e-5)


def test_wide_beam_finds_the_best_sequence_of_an_exhaustive_search():
    """Vocabulary 4 (EOS = 3), 3 new tokens, GNMT penalty 0.8: 16 beams hold every prefix, so
    beam search is exact: its best equals the best of all sequences (ending at their first EOS, or
    3 tokens without one), scored by the model directly; and greedy's score is at most that."""
    vocab, new, eos, alpha = 4, 3, 3, 0.8
    model = Decoder(tiny(vocab, position_embedding="rotary"), nnx.Rngs(2))
    prompt = jnp.array([[0, 1, 2], [0, 0, 1]], jnp.int32)
    mask = jnp.array([[1, 1, 1], [0, 0, 1]], jnp.int32)
    kw = dict(max_new_tokens=new, eos_id=eos, length_penalty_alpha=alpha)
    beam = generate(model, prompt, mask, method="beam", num_beams=vocab ** (new - 1), **kw)
    greedy = generate(model, prompt, mask, **kw)

    for b in range(2):
        real = prompt[b][mask[b] > 0]
        seqs = np.array(list(itertools.product(range(vocab), repeat=new)))
        x = jnp.concatenate([jnp.tile(real, (len(seqs), 1)), jnp.asarray(seqs, jnp.int32)], 1)
        log_probs = jax.nn.log_softmax(nnx.jit(model)(x)["logits"][:, len(real) - 1:-1], -1)
        token_lp = np.take_along_axis(np.asarray(log_probs), seqs[:, :, None], 2)[:, :, 0]
        best = (-np.inf, None)
        for s, lp in zip(seqs, token_lp):
            n = next((t + 1 for t in range(new) if s[t] == eos), new)
            score = lp[:n].sum() / float(length_penalty(jnp.int32(n), alpha))
            if score > best[0]:
                best = (score, list(s[:n]))
        np.testing.assert_allclose(beam.score[b], best[0], rtol=1e-5)
        assert list(np.asarray(beam.tokens[b, : beam.lengths[b]])) == best[1]
        assert greedy.score[b] <= beam.score[b] + 1e-5


def test_sampling_is_reproducible_and_top_k_one_is_greedy(lm):
    kw = dict(max_new_tokens=NEW, method="sample", temperature=2.0)
    a = generate(lm, PROMPT, PROMPT_MASK, rng=jax.random.key(0), **kw)
    b = generate(lm, PROMPT, PROMPT_MASK, rng=jax.random.key(0), **kw)
    c = generate(lm, PROMPT, PROMPT_MASK, rng=jax.random.key(1), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()
    top1 = generate(lm, PROMPT, PROMPT_MASK, rng=jax.random.key(3), top_k=1, **kw)
    greedy = generate(lm, PROMPT, PROMPT_MASK, max_new_tokens=NEW)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.1, 0.4, 0.2, 0.3]]))
    kept = lambda f: np.isfinite(np.asarray(f))[0].tolist()
    assert kept(_filter_logits(logits, 2, 1.0)) == [False, True, False, True]
    # Nucleus: the smallest set of the likeliest tokens holding >= p.
    assert kept(_filter_logits(logits, 0, 0.4)) == [False, True, False, False]
    assert kept(_filter_logits(logits, 0, 0.5)) == [False, True, False, True]
    assert kept(_filter_logits(logits, 0, 0.85)) == [False, True, True, True]
    assert kept(_filter_logits(logits, 0, 0.95)) == [True, True, True, True]


def test_eos_stops_a_sequence_and_pads_after_it(lm):
    # Sampled (at a high temperature, so rows do not repeat one token as greedy's do here): a
    # finished row changes no other row's draws, so the run with EOS is the free run cut short.
    kw = dict(max_new_tokens=NEW, method="sample", temperature=2.0, rng=jax.random.key(5))
    free = np.asarray(generate(lm, PROMPT, PROMPT_MASK, **kw).tokens)
    # EOS := a token some row first draws at a step >= 1; pad with one never drawn.
    r, t, eos = next((r, t, v) for r, row in enumerate(free) for t, v in enumerate(row)
                     if t >= 1 and v not in row[:t])
    pad = next(v for v in range(VOCAB) if v not in free)
    out = generate(lm, PROMPT, PROMPT_MASK, eos_id=int(eos), pad_id=pad, **kw)
    for row, got, n in zip(free, np.asarray(out.tokens), np.asarray(out.lengths)):
        stop = next((i + 1 for i, v in enumerate(row) if v == eos), NEW)
        assert n == stop
        np.testing.assert_array_equal(got[:stop], row[:stop])
        assert (got[stop:] == pad).all()
    assert out.lengths[r] == t + 1 < NEW


def test_unknown_method_is_refused(lm):
    with pytest.raises(ValueError, match="method"):
        generate(lm, PROMPT, PROMPT_MASK, max_new_tokens=2, method="nucleus")
