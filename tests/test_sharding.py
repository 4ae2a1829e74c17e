"""Sharded steps on 8 fake CPU devices match the 1-device step, and FSDP really shards."""
import jax
import ml_collections
import numpy as np
import pytest

from nlp_jax import losses, parallel
from nlp_jax.models.bert import BertConfig, BertForPreTraining
from nlp_jax.train import optim
from nlp_jax.train.step import make_steps

TRAIN = ml_collections.ConfigDict(dict(
    learning_rate=1e-3, warmup_steps=1, num_steps=10, decay="linear", weight_decay=0.01,
    adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0))
MODEL = BertConfig.from_preset("tiny", vocab_size=64, num_heads=4, dropout_rate=0.1)


def _batch(batch_size=8, seq=16, n_pred=3, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch_size, seq), np.int32)
    mask[:, seq - 4:] = 0   # some padding, so masking is exercised too
    return {
        "input_ids": rng.integers(5, 64, (batch_size, seq)).astype(np.int32),
        "token_type_ids": (np.arange(seq) >= seq // 2).astype(np.int32)[None].repeat(batch_size, 0),
        "attention_mask": mask,
        "masked_lm_positions": rng.integers(1, seq - 4, (batch_size, n_pred)).astype(np.int32),
        "masked_lm_ids": rng.integers(5, 64, (batch_size, n_pred)).astype(np.int32),
        "masked_lm_weights": np.ones((batch_size, n_pred), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (batch_size,)).astype(np.int32),
    }


def _run(mesh_shape, devices, num_steps=3, grad_accum_steps=1):
    data, fsdp, tensor = mesh_shape
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                              devices=devices)
    steps = make_steps(lambda rngs: BertForPreTraining(MODEL, rngs), optim.make_optimizer(TRAIN),
                       losses.combined_loss({"mlm": 1.0, "nsp": 1.0}), mesh,
                       parallel.rules_from_config({}), seed=0, grad_accum_steps=grad_accum_steps)
    state, history = steps.init(), []
    for i in range(num_steps):
        state, metrics = steps.train(state, parallel.global_batch(_batch(seed=i), mesh))
        history.append(float(metrics["loss"]))
    return history, jax.device_get(state["params"]), state


@pytest.fixture(scope="module")
def single_device():
    return _run((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)],
                         ids=["data8", "fsdp8", "data2-fsdp2-tensor2", "fsdp2-tensor4"])
def test_sharded_step_matches_one_device(single_device, mesh_shape):
    losses_1, params_1, _ = single_device
    losses_n, params_n, _ = _run(mesh_shape, jax.devices())
    np.testing.assert_allclose(losses_n, losses_1, rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), params_n, params_1)


def test_fsdp_shards_params_and_optimizer_state():
    _, _, state = _run((1, 8, 1), jax.devices(), num_steps=1)

    def per_device_bytes(tree):
        return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))

    def total_bytes(tree):
        return sum(x.nbytes for x in jax.tree.leaves(tree))

    for part in ("params", "opt_state"):
        # Nearly everything is sharded 8 ways (LayerNorm vectors and the NSP head stay replicated).
        assert per_device_bytes(state[part]) < total_bytes(state[part]) / 6, part
    kernel = state["params"]["bert"]["layers"][0]["intermediate"]["kernel"]
    assert kernel.addressable_shards[0].data.shape == (128 // 8, 512)


def test_gradient_accumulation_matches_one_big_batch(single_device):
    # Same global batch, split into 2 micro-batches: means of equal-sized halves. Dropout keys
    # differ per micro-batch, so compare without dropout... the loss with dropout differs; compare
    # the first step's loss only up to dropout noise is meaningless, hence dropout 0 here.
    global MODEL
    saved, MODEL = MODEL, BertConfig.from_preset("tiny", vocab_size=64, num_heads=4, dropout_rate=0.0)
    try:
        l1, p1, _ = _run((1, 1, 1), jax.devices()[:1], num_steps=2)
        l2, p2, _ = _run((1, 1, 1), jax.devices()[:1], num_steps=2, grad_accum_steps=2)
    finally:
        MODEL = saved
    # MLM loss is a mean over masked positions; halves have equal counts, so means compose exactly.
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p2, p1)
