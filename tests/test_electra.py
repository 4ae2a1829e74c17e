"""ELECTRA: replaced-token detection's labels and loss, the generator's sample, and a tiny run
through the trainer that resumes exactly and that fine-tuning starts from (the discriminator)."""
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import finetune_cls, pretrain
from nlp_jax import losses, parallel
from nlp_jax.data import build_pretraining_data
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.electra import (ElectraConfig, ElectraForPreTraining, generator_config,
                                    sample_replacements)
from nlp_jax.train.checkpoint import Checkpointer
from nlp_jax.train.pretrained import load_workdir
from nlp_jax.train.recipes.finetune import Finetune
from nlp_jax.train.recipes.pretrain import Pretrain, training_losses
from nlp_jax.train.step import model_inputs
from nlp_jax.train.trainer import train_and_evaluate
from crash import Crash, crash_after

TINY = BertConfig.from_preset("tiny", num_layers=1, vocab_size=7, max_position_embeddings=16)


def masked_batch(vocab_size=7, seed=0):
    """Two rows of 10 tokens; row 0 masks positions 1, 4, 6, row 1 positions 2, 3 (and one padding
    slot each, pointing at position 0 as the pipeline's padding does)."""
    rng = np.random.default_rng(seed)
    text = rng.integers(1, vocab_size, (2, 10)).astype(np.int32)
    positions = np.array([[1, 4, 6, 0], [2, 3, 0, 0]], np.int32)
    weights = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    ids = np.where(weights > 0, np.take_along_axis(text, positions, 1), 0).astype(np.int32)
    masked = text.copy()
    for row in range(2):
        masked[row, positions[row][weights[row] > 0]] = 0   # "[MASK]"
    return text, {"input_ids": masked, "attention_mask": np.ones_like(masked),
                  "token_type_ids": np.zeros_like(masked), "masked_lm_positions": positions,
                  "masked_lm_ids": ids, "masked_lm_weights": weights}


def runner(model):
    """The model's call, jitted: fn(batch, dropout_rng=None, sample_rng=None) -> outputs."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def call(params, batch, dropout_rng, sample_rng):
        m = nnx.merge(graphdef, params)
        return m(**model_inputs(m, batch), dropout_rng=dropout_rng, sample_rng=sample_rng)

    return lambda batch, dropout_rng=None, sample_rng=None: jax.device_get(
        call(params, batch, dropout_rng, sample_rng))


def test_rtd_labels_are_one_exactly_where_the_sample_differs_from_the_original():
    text, batch = masked_batch()
    run = runner(ElectraForPreTraining(TINY, nnx.Rngs(0)))
    seen = set()
    for seed in range(4):   # a 7-token vocabulary: samples often hit the original, often not
        out = run(batch, dropout_rng=jax.random.key(seed))
        sample, labels = out["generator_sample"], out["rtd_labels"]
        expected = np.zeros_like(text)
        replaced = text.copy()
        for row in range(2):
            for pos, original, s, w in zip(batch["masked_lm_positions"][row],
                                           batch["masked_lm_ids"][row], sample[row],
                                           batch["masked_lm_weights"][row]):
                if w:
                    expected[row, pos] = int(s != original)
                    replaced[row, pos] = s
                    seen.add(int(s != original))
        np.testing.assert_array_equal(labels, expected)   # 0 at every unmasked position
        np.testing.assert_array_equal(out["discriminator_input_ids"], replaced)
    assert seen == {0, 1}


def test_disallow_correct_never_samples_the_original():
    logits = jnp.zeros((4, 16, 3)).at[..., 1].set(5.0)   # token 1 is the generator's favourite
    originals = jnp.ones((4, 16), jnp.int32)
    free = sample_replacements(logits, originals, jax.random.key(0))
    forced = sample_replacements(logits, originals, jax.random.key(0), disallow_correct=True)
    assert (free == 1).any() and not (forced == 1).any()


def test_rtd_loss_equals_hand_computed_sigmoid_cross_entropy():
    logits = np.array([[2.0, -1.0, 0.5, 30.0], [-3.0, 0.2, -40.0, 1.0]], np.float32)
    labels = np.array([[1, 0, 0, 1], [1, 1, 0, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)   # the last token is padding
    loss, metrics = losses.get("rtd")({"rtd_logits": logits, "rtd_labels": labels},
                                      {"attention_mask": mask})
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_token = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    real = mask > 0
    assert float(loss) == pytest.approx(per_token[real].mean(), rel=1e-5)
    predicted = logits > 0   # replaced: positions (0,0) (0,2) (0,3) (1,1); truly: (0,0) (0,3) (1,0) (1,1)
    assert float(metrics["rtd_accuracy"]) == pytest.approx(5 / 7)
    assert float(metrics["rtd_precision"]) == pytest.approx(3 / 4)
    assert float(metrics["rtd_recall"]) == pytest.approx(3 / 4)
    assert float(metrics["rtd_replaced_fraction"]) == pytest.approx(4 / 7)
    assert predicted[real].sum() == 4


def test_the_sample_is_reproducible_for_a_key_and_carries_no_gradient():
    # No dropout: the key then changes nothing but the sample.
    model = ElectraForPreTraining(dataclasses.replace(TINY, vocab_size=50, dropout_rate=0.0),
                                  nnx.Rngs(0))
    run = runner(model)
    _, batch = masked_batch(vocab_size=50, seed=1)
    a = run(batch, dropout_rng=jax.random.key(3))["generator_sample"]
    b = run(batch, dropout_rng=jax.random.key(3))["generator_sample"]
    c = run(batch, dropout_rng=jax.random.key(4))["generator_sample"]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    # sample_rng, when given, is the sample's key.
    d = run(batch, dropout_rng=jax.random.key(4), sample_rng=jax.random.key(9))["generator_sample"]
    e = run(batch, dropout_rng=jax.random.key(5), sample_rng=jax.random.key(9))["generator_sample"]
    np.testing.assert_array_equal(d, e)

    # Replaced-token detection does not train the generator (ELECTRA's stop-gradient); only the
    # embeddings, shared with the discriminator, receive its gradient.
    graphdef, params = nnx.split(model)

    def rtd(p):
        m = nnx.merge(graphdef, p)
        return losses.get("rtd")(m(**model_inputs(m, batch), dropout_rng=jax.random.key(3)),
                                 batch)[0]

    grads = jax.device_get(nnx.to_pure_dict(jax.jit(jax.grad(rtd))(params)))
    assert all(not np.any(g) for g in jax.tree.leaves(grads["generator"]))
    assert np.any(grads["bert"]["embeddings"]["word_embeddings"]["embedding"])


def test_generator_sizes_follow_electra():
    base = BertConfig.from_preset("base", vocab_size=100)
    third = generator_config(base, ElectraConfig(generator_hidden_size=1 / 3))
    assert (third.hidden_size, third.num_heads, third.intermediate_size, third.num_layers) == \
        (256, 4, 1024, 12)
    tiny = generator_config(TINY, ElectraConfig(generator_hidden_size=0.25, generator_layers=0.5))
    assert (tiny.hidden_size, tiny.num_heads, tiny.num_layers) == (32, 1, 1)
    with pytest.raises(ValueError, match="generator_hidden_size"):
        generator_config(TINY, ElectraConfig(generator_hidden_size=2.0))


def test_parameters_carry_logical_axes_so_a_mesh_shards_them():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg = dataclasses.replace(TINY, vocab_size=64)
    abstract = nnx.state(nnx.eval_shape(lambda: ElectraForPreTraining(cfg, nnx.Rngs(0))))
    shardings = parallel.param_shardings(abstract, mesh, dict(parallel.DEFAULT_RULES))
    spec = lambda *path: tuple(functools.reduce(lambda t, k: t[k], path, shardings).spec)
    g = ("generator", "layers", 0)
    assert spec(*g, "intermediate", "kernel") == ("fsdp", "tensor")          # [32, 128]
    assert spec("generator", "embeddings_project", "kernel") == (None, "fsdp")   # [128, 32]
    assert spec("generator", "mlm_bias") == ("tensor",)                       # vocabulary
    assert spec("rtd_output", "kernel") == ("fsdp", None)
    assert spec("bert", "layers", 0, "intermediate", "kernel") == ("fsdp", "tensor")


def electra_config(**train):
    c = pretrain.get_config("tiny")
    c.model.electra, c.model.num_layers = True, 1
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 400, 4000, 64
    c.data.max_predictions, c.data.pack = 10, True   # packed rows: per-example attention
    c.train.batch_size, c.train.eval_batches, c.train.progress_bar = 8, 2, False
    c.train.warmup_steps = 2
    c.train.update(train)
    return c


def test_electra_refuses_a_config_without_its_losses():
    c = electra_config()
    assert set(training_losses(c)) == {"generator_mlm", "rtd"}
    c.losses.rtd = 0.0
    with pytest.raises(ValueError, match="losses.rtd"):
        Pretrain.check_config(c)
    c = electra_config()
    c.model.generator_hidden_size = 1.5
    with pytest.raises(ValueError, match="generator_hidden_size"):
        Pretrain.check_config(c)
    assert set(training_losses(pretrain.get_config("tiny"))) == {"mlm", "nsp"}


def rows(workdir, split="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def test_electra_trains_resumes_exactly_and_finetuning_loads_the_discriminator(tmp_path):
    cfg = electra_config(num_steps=8, log_every=1, eval_every=4, checkpoint_every=4)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(cfg, straight)
    with pytest.raises(Crash):   # dies two steps after the step-4 checkpoint
        train_and_evaluate(cfg, resumed, hooks=[crash_after(6)])
    train_and_evaluate(cfg, resumed)

    a, b = rows(straight), rows(resumed)
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]   # bitwise: same samples, same keys
    assert rows(straight, "eval") == rows(resumed, "eval")
    assert a[-1]["loss"] < a[0]["loss"]
    assert a[-1]["rtd_loss"] < a[0]["rtd_loss"]
    assert a[-1]["loss"] == pytest.approx(a[-1]["generator_mlm_loss"] + 50 * a[-1]["rtd_loss"],
                                          rel=1e-5)
    ev = rows(straight, "eval")[-1]
    assert {"generator_masked_lm_accuracy", "generator_sample_accuracy", "rtd_accuracy",
            "rtd_precision", "rtd_recall", "masked_lm_accuracy_baseline"} <= set(ev)
    assert "next_sentence_accuracy" not in ev and "masked_lm_accuracy" not in ev

    # The workdir loads back as ELECTRA and scores what its last evaluation logged (evaluation
    # samples with a fixed key).
    model, _, saved = load_workdir(straight)
    assert isinstance(model, ElectraForPreTraining)
    data = build_pretraining_data(saved.data, workdir=straight, batch_size=8, seed=0,
                                  num_eval_batches=2)
    graphdef, params = nnx.split(model)
    score = jax.jit(lambda p, b: losses.get("rtd")(
        nnx.merge(graphdef, p)(**model_inputs(model, b)), b)[0])
    rtd = [float(score(params, b)) for b in data.eval_batches()]
    assert np.mean(rtd) == pytest.approx(ev["rtd_loss"], rel=1e-5)

    # Fine-tuning from it (init_from) starts from the discriminator: the fine-tuning recipe's
    # initial parameters, as the trainer takes them, hold the checkpoint's `bert` subtree.
    c = finetune_cls.get_config()
    c.init_from, c.train.batch_size, c.data.max_seq_len = straight, 8, 48
    for t in c.tasks.values():
        t.max_examples = 16
    Finetune.check_config(c)
    recipe = Finetune(c, str(tmp_path / "finetune"), parallel.make_mesh(c.mesh, jax.devices()[:1]))
    fresh = nnx.to_pure_dict(nnx.state(recipe.model(nnx.Rngs(0))))
    loaded = jax.device_get(recipe.init_params(fresh)["bert"])
    discriminator = flat(saved_params(tmp_path / "straight", 8)["bert"])
    assert flat(loaded).keys() == discriminator.keys()
    for name, value in flat(loaded).items():
        np.testing.assert_array_equal(value, discriminator[name], err_msg=name)
    table = ("embeddings", "word_embeddings", "embedding")
    assert not np.array_equal(loaded[table[0]][table[1]][table[2]],
                              fresh["bert"][table[0]][table[1]][table[2]])


def flat(tree) -> dict:
    """{"a/b/c": leaf}: the checkpoint's raw restore names list items "0", nnx's state 0."""
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def saved_params(workdir, step):
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    try:
        return ckpt.manager.restore(step)["state"]["params"]
    finally:
        ckpt.close()
