"""Remedies for overfitting: R-Drop's term and FGM/PGD's perturbation against hand computations
through the real training step, and early stopping on the dev score."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import finetune_cls
from nlp_jax import losses, parallel
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train import optim
from nlp_jax.train.step import Regularizers, make_steps, rdrop_kl
from nlp_jax.train.trainer import train_and_evaluate

TRAIN = ml_collections.ConfigDict(dict(
    learning_rate=1e-3, warmup_steps=1, num_steps=10, decay="linear", weight_decay=0.01,
    adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0))
EMB = ("bert", "embeddings", "word_embeddings", "embedding")


def test_rdrop_kl_by_hand():
    a = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    b = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, -2.0]])
    p, q = (np.exp(x) / np.exp(x).sum(-1, keepdims=True) for x in (a, b))
    kl = 0.5 * ((p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1))
    w = np.array([1.0, 3.0])
    assert float(rdrop_kl(a, b, w)) == pytest.approx((kl * w).sum() / 4, rel=1e-5)


def setup(regularizers, dropout=0.1):
    cfg = BertConfig.from_preset("tiny", vocab_size=40, dropout_rate=dropout)
    make = lambda rngs: BertForTasks(cfg, {"t": ("classification", 3)}, rngs)
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                              devices=jax.devices()[:1])
    loss_fn = losses.combined_loss({"classification": 1.0})
    steps = make_steps(make, optim.make_optimizer(TRAIN), loss_fn, mesh,
                       parallel.rules_from_config({}), seed=0, model_kwargs={"task": "t"},
                       regularizers=regularizers)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 40, (8, 10)).astype(np.int32),
             "attention_mask": np.ones((8, 10), np.int32),
             "labels": rng.integers(0, 3, (8,)).astype(np.int32),
             "example_weights": np.ones((8,), np.float32)}
    state = steps.init()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(nnx.Rngs(0))))

    def loss_at(params, key):   # the loss of one pass, by hand
        model = nnx.merge(graphdef, params)
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"], task="t",
                    dropout_rng=key)
        return loss_fn(out, batch)[0], out
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 0)   # step 0's key
    return steps, state, batch, loss_at, key


def test_rdrop_loss_is_the_mean_of_two_dropout_passes_plus_alpha_kl():
    steps, state, batch, loss_at, key = setup(Regularizers(rdrop_alpha=0.7))
    params = jax.device_get(state["params"])
    key_a, key_b = jax.random.split(key)
    (loss_a, out_a), (loss_b, out_b) = loss_at(params, key_a), loss_at(params, key_b)
    kl = rdrop_kl(out_a["logits"], out_b["logits"], batch["example_weights"])
    assert float(kl) > 1e-6                       # dropout made the two passes differ
    _, metrics = steps.train(state, batch)
    assert float(metrics["rdrop_loss"]) == pytest.approx(float(kl), rel=1e-4)
    assert float(metrics["loss"]) == pytest.approx(float((loss_a + loss_b) / 2 + 0.7 * kl),
                                                   rel=1e-5)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversarial_loss_is_the_loss_at_epsilon_times_the_unit_gradient(method):
    """FGM moves the embedding table by epsilon * g / ||g||; PGD with one step is the same."""
    steps, state, batch, loss_at, key = setup(
        Regularizers(adversarial=method, adversarial_epsilon=0.5, adversarial_steps=1))
    params = jax.device_get(state["params"])
    grads = jax.grad(lambda p: loss_at(p, key)[0])(params)
    g = np.asarray(grads["bert"]["embeddings"]["word_embeddings"]["embedding"])
    moved = jax.tree.map(lambda x: x, params)
    moved["bert"]["embeddings"]["word_embeddings"]["embedding"] = (
        params["bert"]["embeddings"]["word_embeddings"]["embedding"] + 0.5 * g / np.linalg.norm(g))
    adv_loss = float(loss_at(moved, key)[0])
    _, metrics = steps.train(state, batch)
    assert float(metrics["adversarial_loss"]) == pytest.approx(adv_loss, rel=1e-5)
    assert adv_loss > float(metrics["loss"])      # the perturbation ascends the loss
    # The update follows the clean plus the adversarial gradients.
    adv_grads = jax.grad(lambda p: loss_at(p, key)[0])(moved)
    total = jax.tree.map(np.add, grads, adv_grads)
    assert float(metrics["grad_norm"]) == pytest.approx(
        float(np.sqrt(sum((np.asarray(x) ** 2).sum() for x in jax.tree.leaves(total)))), rel=1e-4)


def test_early_stopping_stops_after_patience_and_a_rerun_only_tests(tmp_path):
    c = finetune_cls.get_config()
    c.model.size, c.data.tokenizer_model, c.data.vocab_size = "tiny", "char", 2000
    c.data.max_seq_len = 32
    c.tasks.sentiment.max_examples = 24
    # learning rate 0: the dev score never improves after the first evaluation.
    c.train.update(batch_size=8, num_steps=12, eval_every=1, log_every=1, warmup_steps=1,
                   learning_rate=0.0, early_stopping_patience=2, progress_bar=False)
    first = train_and_evaluate(c, str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "dev"] == [1, 2, 3]
    assert max(r["step"] for r in rows if r["split"] == "train") == 3
    assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "3"
    again = train_and_evaluate(c, str(tmp_path))   # stopped runs stay stopped
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "dev"] == [1, 2, 3]
    assert again == first
