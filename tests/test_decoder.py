"""The decoder-only language model and the encoder-decoder: causal masks, the key/value cache, the
next-token loss, BERT2BERT's warm start, and the language-model recipe end to end."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import pretrain_lm
from nlp_jax import losses
from nlp_jax.models.bert import BertConfig, BertEncoder
from nlp_jax.models.decoder import Decoder, Seq2Seq, warm_start_decoder
from nlp_jax.train.trainer import train_and_evaluate
from crash import Crash, crash_after

VOCAB = 40


def tiny(**kw):
    return BertConfig.from_preset("tiny", vocab_size=VOCAB, max_position_embeddings=32, **kw)


def ids(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(5, VOCAB, shape), jnp.int32)


@pytest.mark.parametrize("position_embedding", ["rotary", "absolute"])
def test_the_causal_mask_leaks_nothing_from_later_tokens(position_embedding):
    model = Decoder(tiny(position_embedding=position_embedding), nnx.Rngs(0))
    x = ids((2, 10))
    for t in (0, 4, 8):
        changed = x.at[:, t + 1].set((x[:, t + 1] + 1 - 5) % (VOCAB - 5) + 5)
        a, b = model(x)["logits"], model(changed)["logits"]
        np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
        assert np.abs(a[:, t + 1:] - b[:, t + 1:]).max() > 1e-4   # the change is seen after it


def test_packed_documents_see_nothing_of_each_other():
    """Row = document 1 (positions 0..3) + document 2 (0..5): document 2's logits are those of
    document 2 alone, whatever document 1 holds, and document 1 sees nothing of document 2."""
    model = Decoder(tiny(), nnx.Rngs(0))
    x = ids((1, 10))
    docs = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 2]])
    positions = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]])
    packed = model(x, docs, positions)["logits"]
    alone = model(x[:, 4:])["logits"]
    np.testing.assert_allclose(packed[:, 4:], alone, atol=1e-5)
    other = model(x.at[:, :4].set(7), docs, positions)["logits"]
    np.testing.assert_array_equal(packed[:, 4:], other[:, 4:])
    np.testing.assert_allclose(packed[:, :4], model(x[:, :4])["logits"], atol=1e-5)


def _step_by_step(call, x, prompt, max_len):
    """Logits of x fed through the cache: the first `prompt` tokens at once, then one by one."""
    cache, mask = None, jnp.zeros((x.shape[0], max_len), jnp.int32)
    out, logits = None, []
    for start, stop in [(0, prompt)] + [(t, t + 1) for t in range(prompt, x.shape[1])]:
        mask = mask.at[:, start:stop].set(1)
        out = call(x[:, start:stop], mask, cache)
        cache = out["cache"]
        logits.append(out["logits"])
    return jnp.concatenate(logits, axis=1)


@pytest.mark.parametrize("position_embedding", ["rotary", "absolute"])
def test_cached_decoding_gives_the_logits_of_the_full_forward(position_embedding):
    model = Decoder(tiny(position_embedding=position_embedding), nnx.Rngs(1))
    x = ids((2, 9))
    step = lambda chunk, mask, cache: model(chunk, mask, cache=cache or model.init_cache(2, 12))
    np.testing.assert_allclose(_step_by_step(step, x, 5, 12), model(x)["logits"], atol=1e-5)


def test_the_encoder_decoder_decodes_through_its_cache_and_its_memory():
    model = Seq2Seq(tiny(), nnx.Rngs(2))
    source, target = ids((2, 7), seed=1), ids((2, 6), seed=2)
    source_mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
    full = model(source, source_mask, target, jnp.ones_like(target))["logits"]
    memory = model.encode(source, source_mask)
    step = lambda chunk, mask, cache: model.decoder(
        chunk, mask, memory=memory, cache=cache or model.decoder.init_cache(2, 8))
    np.testing.assert_allclose(_step_by_step(step, target, 1, 8), full, atol=1e-5)
    # The source's padding is not read: changing it changes nothing.
    padded = source.at[1, 4:].set(9)
    np.testing.assert_array_equal(model(padded, source_mask, target)["logits"][1], full[1])


def test_bert2bert_warm_start_copies_the_encoder_into_the_decoder():
    cfg = tiny()
    params = nnx.to_pure_dict(nnx.state(Seq2Seq(cfg, nnx.Rngs(0))))
    bert = nnx.to_pure_dict(nnx.state(BertEncoder(cfg, nnx.Rngs(5))))
    warm = warm_start_decoder(params, bert)
    for i in range(cfg.num_layers):
        layer = warm["decoder"]["layers"][i]
        np.testing.assert_array_equal(layer["qkv"]["kernel"], bert["layers"][i]["qkv"]["kernel"])
        # The cross-attention has no counterpart in BERT: it keeps its fresh weights.
        np.testing.assert_array_equal(layer["cross_attention"]["query"]["kernel"],
                                      params["decoder"]["layers"][i]["cross_attention"]["query"]["kernel"])
    np.testing.assert_array_equal(warm["decoder"]["embeddings"]["word_embeddings"]["embedding"],
                                  bert["embeddings"]["word_embeddings"]["embedding"])
    assert warm["bert"] is bert


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_next_token_loss_is_the_weighted_cross_entropy(smoothing):
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 5, 7).astype(np.float32)
    labels = rng.randint(0, 7, (2, 5))
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    loss, metrics = losses.get("seq2seq")({"logits": jnp.asarray(logits)},
                                          {"labels": labels, "label_weights": weights},
                                          label_smoothing=smoothing)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.eye(7)[labels] * (1 - smoothing) + smoothing / 7
    expected = (-(target * logp).sum(-1) * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    correct = (logits.argmax(-1) == labels) * weights
    np.testing.assert_allclose(float(metrics["accuracy"]), correct.sum() / weights.sum(), rtol=1e-6)
    assert float(metrics["predicted_tokens"]) == 8.0
    assert losses.get("clm") is losses.get("seq2seq")


def lm_config(**train):
    c = pretrain_lm.get_config("tiny")
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 200, 3000, 32
    c.train.batch_size, c.train.eval_batches, c.train.progress_bar = 8, 2, False
    c.train.warmup_steps, c.train.steps_per_execution = 2, 1
    c.train.update(train)
    return c


def rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def straight_config():
    return lm_config(num_steps=6, log_every=1, eval_every=3, checkpoint_every=3)


@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory):
    """A language model trained 6 steps without interruption (shared by the tests below)."""
    workdir = tmp_path_factory.mktemp("lm") / "straight"
    train_and_evaluate(straight_config(), str(workdir))
    return workdir


def test_the_language_model_resumes_exactly_and_shards_without_changing_results(tmp_path,
                                                                                 trained_lm):
    cfg = straight_config()
    with pytest.raises(Crash):
        train_and_evaluate(cfg, str(tmp_path / "resumed"), hooks=[crash_after(4)])
    train_and_evaluate(cfg, str(tmp_path / "resumed"))
    straight, resumed = rows(trained_lm, "train"), rows(tmp_path / "resumed", "train")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["loss"] for r in straight] == [r["loss"] for r in resumed]
    evals = rows(trained_lm, "eval")
    assert rows(tmp_path / "resumed", "eval") == evals
    assert evals[-1]["perplexity"] == pytest.approx(np.exp(evals[-1]["loss"]))
    assert evals[-1]["loss"] < evals[0]["loss"] < np.log(3000) + 0.5
    assert 1 < evals[-1]["perplexity_baseline"] < 3000

    sharded = straight_config()
    sharded.mesh.data, sharded.mesh.fsdp, sharded.mesh.tensor = 2, 2, 2
    train_and_evaluate(sharded, str(tmp_path / "sharded"))
    np.testing.assert_allclose([r["loss"] for r in rows(tmp_path / "sharded", "train")],
                               [r["loss"] for r in straight], rtol=2e-5)


def test_generate_on_a_trained_language_model_continues_each_prompt_greedily(trained_lm):
    """--mode generate's path (nlp_jax/generate.py) against a hand-written greedy loop over the
    saved model's full, uncached forward."""
    from nlp_jax.data.seq2seq import detokenize
    from nlp_jax.generate import generate_lines, load_generator
    workdir, cfg = str(trained_lm), straight_config()
    cfg.generate.method, cfg.generate.max_new_tokens = "greedy", 5
    prompts = ["人民日报", "今天"]
    texts = generate_lines(workdir, [p + "\n" for p in prompts], cfg.generate)
    graphdef, params, tokenizer, seq2seq, _ = load_generator(workdir)
    assert not seq2seq
    model = nnx.merge(graphdef, params)
    for prompt, text in zip(prompts, texts):
        tokens = [tokenizer.cls_id, *tokenizer.encode(prompt)]
        new = []
        for _ in range(5):
            logits = model(jnp.asarray([tokens + new]))["logits"][0, -1]
            new.append(int(jnp.argmax(logits)))
            if new[-1] == tokenizer.sep_id:
                break
        assert text == detokenize(tokenizer, new)
