"""The BERT model: padding, the masked-LM head, shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nlp_jax import data, losses
from nlp_jax.data import packing
from nlp_jax.models.bert import BertConfig, BertForPreTraining
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train.step import model_inputs


def _model(**kw):
    cfg = BertConfig.from_preset("tiny", vocab_size=50, **kw)
    return BertForPreTraining(cfg, nnx.Rngs(0))


def test_padding_does_not_change_real_token_outputs():
    model = _model()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, (1, 10)).astype(np.int32)
    short = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    # Same 10 tokens padded to 16 with arbitrary ids (padding content must not matter either).
    padded_ids = np.concatenate([ids, rng.integers(0, 50, (1, 6)).astype(np.int32)], 1)
    mask = np.array([[1] * 10 + [0] * 6], np.int32)
    long = model(padded_ids, jnp.zeros_like(padded_ids), mask)
    np.testing.assert_allclose(long["sequence_output"][:, :10], short["sequence_output"], atol=1e-5)
    np.testing.assert_allclose(long["pooled_output"], short["pooled_output"], atol=1e-5)


def test_masked_lm_head_at_positions_equals_tied_full_head():
    model = _model()
    ids = np.arange(5, 21, dtype=np.int32)[None]
    positions = np.array([[3, 0, 15]], np.int32)
    out = model(ids, masked_lm_positions=positions)
    # Recompute by hand from the sequence output with the tied word embeddings.
    x = out["sequence_output"][0, positions[0]]
    h = model.mlm_layer_norm(jax.nn.gelu(model.mlm_transform(x), approximate=False))
    expected = h @ model.bert.embeddings.word_embeddings.embedding[...].T + model.mlm_bias[...]
    assert out["masked_lm_logits"].shape == (1, 3, 50)
    np.testing.assert_allclose(out["masked_lm_logits"][0], expected, atol=1e-5)
    assert out["next_sentence_logits"].shape == (1, 2)


def test_dropout_only_with_a_key():
    model = _model()
    ids = np.arange(5, 21, dtype=np.int32)[None]
    a, b = model(ids), model(ids)
    np.testing.assert_array_equal(a["sequence_output"], b["sequence_output"])
    c = model(ids, dropout_rng=jax.random.key(1))
    d = model(ids, dropout_rng=jax.random.key(2))
    assert not np.allclose(c["sequence_output"], d["sequence_output"])
    assert not np.allclose(a["sequence_output"], c["sequence_output"])


def test_dropout_hash_is_jax_threefry_bit_for_bit():
    import jax.extend
    from nlp_jax.models.bert import threefry2x32
    key = jax.random.key_data(jax.random.key(1234))
    counts = jax.lax.iota(jnp.uint32, 4096).reshape(64, 64)
    want = jax.extend.random.threefry2x32_p.bind(key[0], key[1], counts, counts * 7)
    got = jax.jit(threefry2x32)(key[0], key[1], counts, counts * 7)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_bfloat16_compute_keeps_float32_params():
    model = _model(dtype="bfloat16")
    params = nnx.state(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    out = model(np.arange(5, 21, dtype=np.int32)[None])
    assert out["sequence_output"].dtype == jnp.bfloat16
    assert out["masked_lm_logits"].dtype == jnp.float32


def test_remat_same_gradients_and_less_memory():
    """model.remat recomputes activations in the backward pass: identical loss and gradients
    (dropout included), and a compiled step that really keeps fewer activations."""
    ids = np.random.default_rng(0).integers(5, 50, (4, 256)).astype(np.int32)

    def grad_fn(remat):
        cfg = BertConfig(vocab_size=50, hidden_size=64, num_layers=6, num_heads=2,
                         intermediate_size=256, remat=remat)
        graphdef, params = nnx.split(BertForPreTraining(cfg, nnx.Rngs(0)))

        def loss(p):
            out = nnx.merge(graphdef, p)(ids, dropout_rng=jax.random.key(3))
            return jnp.mean(out["sequence_output"] ** 2) + jnp.mean(out["masked_lm_logits"] ** 2)

        compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
        return compiled(params), compiled.memory_analysis().temp_size_in_bytes

    (loss, grads), temp = grad_fn(False)
    (loss_r, grads_r), temp_r = grad_fn(True)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_r, grads)
    # 6 layers of activations (~8 MB here) vs one layer's plus the layer inputs.
    assert temp_r < 0.5 * temp, (temp_r, temp)


@pytest.mark.parametrize("x_shape, kernel_shape, axes", [
    ((2, 5, 8), (8, 3, 4, 6), (2,)),       # the fused query/key/value projection
    ((2, 5, 4, 6), (4, 6, 8), (2, 3)),     # the attention output projection
])
def test_kernel_order_dot_has_the_gradients_of_dot_general(x_shape, kernel_shape, axes):
    from nlp_jax.models.bert import kernel_order_dot
    x = jax.random.normal(jax.random.key(0), x_shape)
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    dims = (axes, tuple(range(len(axes)))), ((), ())
    loss = lambda dot: lambda x, k: jnp.sum(jnp.sin(dot(x, k, dims)))
    want = jax.grad(loss(jax.lax.dot_general), (0, 1))(x, kernel)
    got = jax.grad(loss(kernel_order_dot), (0, 1))(x, kernel)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_rotary_is_a_rotation_by_position_and_scores_depend_on_offset_only():
    from nlp_jax.models.bert import rotary
    rng = np.random.default_rng(0)
    seq, d = 12, 8
    x = rng.normal(size=(1, seq, 1, d)).astype(np.float32)
    # By hand: pair i, as the complex number x[i] + j x[i + d/2], is multiplied by exp(j p theta_i).
    theta = 10000.0 ** (-np.arange(d // 2) / (d // 2))
    z = (x[..., : d // 2] + 1j * x[..., d // 2:]) * np.exp(1j * np.arange(seq)[None, :, None, None] * theta)
    np.testing.assert_allclose(rotary(jnp.asarray(x)), np.concatenate([z.real, z.imag], -1), atol=1e-5)
    # The same query and key vector at every position: the score of (t, s) is a function of t - s.
    q = np.broadcast_to(rng.normal(size=(1, 1, 1, d)), (1, seq, 1, d)).astype(np.float32)
    k = np.broadcast_to(rng.normal(size=(1, 1, 1, d)), (1, seq, 1, d)).astype(np.float32)
    scores = np.einsum("btnd,bsnd->ts", rotary(jnp.asarray(q)), rotary(jnp.asarray(k)))
    for offset in range(-seq + 1, seq):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-4, atol=1e-4)
    assert np.ptp(np.diagonal(scores, 0)) < 1e-4 < np.ptp(scores[0])   # but it does change with offset


def test_rotary_model_has_no_position_table_and_sees_order():
    model = _model(position_embedding="rotary", max_position_embeddings=4)   # no table: no limit
    assert not hasattr(model.bert.embeddings, "position_embeddings")
    for layer in model.bert.layers:   # sharper attention than at initialisation, so order shows
        layer.qkv.kernel[...] = layer.qkv.kernel[...] * 30
    ids = np.array([[1, 7, 8, 9, 2]], np.int32)
    swapped = np.array([[1, 9, 8, 7, 2]], np.int32)
    a, b = model(ids)["sequence_output"], model(swapped)["sequence_output"]
    # Without positions the encoder is permutation-equivariant; with them, order changes the output.
    assert np.abs(a[0, 1] - b[0, 3]).max() > 1e-2


@pytest.mark.parametrize("position_embedding", ["absolute", "rotary"])
def test_packed_rows_equal_examples_alone(position_embedding):
    """Examples packed into one row (packing.pack_features) get the logits they get alone."""
    cfg = BertConfig.from_preset("tiny", vocab_size=50, position_embedding=position_embedding)
    model = BertForTasks(cfg, {"cls": ("classification", 3), "tok": ("token_classification", 4)},
                         nnx.Rngs(0))
    rng = np.random.default_rng(0)
    L, lengths = 16, [7, 5, 3]
    mask = (np.arange(L)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = np.where(mask, rng.integers(5, 50, (3, L)), 0).astype(np.int32)
    types = (mask * (np.arange(L)[None] >= 4)).astype(np.int32)     # the first example is a pair
    alone = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    packed = packing.pack_features({**alone, "labels": np.zeros(3, np.int32)}, pad_id=0)
    assert len(packed["input_ids"]) == 1                                 # 15 tokens fit in 16
    inputs = {k: packed[k] for k in ("input_ids", "token_type_ids", "attention_mask",
                                      "position_ids", "cls_positions")}
    cls_alone, cls_packed = model(**alone, task="cls")["logits"], model(**inputs, task="cls")["logits"]
    tok_alone, tok_packed = model(**alone, task="tok")["logits"], model(**inputs, task="tok")["logits"]
    for slot, start in enumerate(packed["cls_positions"][0, :3]):
        i = lengths.index(int((packed["attention_mask"][0] == slot + 1).sum()))
        np.testing.assert_allclose(cls_packed[0, slot], cls_alone[i], atol=1e-5)
        np.testing.assert_allclose(tok_packed[0, start:start + lengths[i]], tok_alone[i, :lengths[i]],
                                   atol=1e-5)


@pytest.mark.parametrize("position_embedding", ["absolute", "rotary"])
def test_packed_pretraining_row_equals_its_instances_alone(position_embedding):
    """A packed pretraining row (pretraining.make_packed_example) gets, per instance, the masked-LM
    and next-sentence logits the instance gets alone, and the same MLM + NSP loss."""
    model = _model(position_embedding=position_embedding)
    rng = np.random.default_rng(0)
    parts = [rng.integers(5, 50, n).tolist() for n in (2, 1, 1, 1, 1, 1)]   # A, B of 3 instances
    tokens = [[2, *a, 3, *b, 3] for a, b in zip(parts[::2], parts[1::2])]   # 6, 5, 5 tokens
    inst = data.Instances(tokens=np.concatenate(tokens).astype(np.int32),
                          offsets=np.cumsum([0] + [len(t) for t in tokens]),
                          segment_b_start=np.array([len(a) + 2 for a in parts[::2]], np.int32),
                          next_sentence_labels=np.array([0, 1, 1], np.int32),
                          document_index=np.zeros(3, np.int32))
    cfg = data.ExampleConfig(max_seq_len=16, max_predictions=6, mask_prob=0.5, vocab_size=50,
                             pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    rows = data.pack_instances(inst, 16)
    assert len(rows) == 1                                                   # 16 tokens fit in 16
    packed = {k: v[None] for k, v in data.make_packed_example(0, rows, inst, rng, cfg).items()}
    alone = {k: np.zeros((3, *v.shape[1:]), v.dtype) for k, v in packed.items()
             if k in ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                      "masked_lm_ids", "masked_lm_weights")}
    alone["next_sentence_labels"] = np.zeros(3, np.int32)
    where = []                                   # (instance, its prediction slot) per packed one
    for slot, i in enumerate(rows.row(0)):
        span = packed["attention_mask"][0] == slot + 1
        n = int(span.sum())
        alone["input_ids"][i, :n] = packed["input_ids"][0, span]
        alone["token_type_ids"][i, :n] = packed["token_type_ids"][0, span]
        alone["attention_mask"][i, :n] = 1
        alone["next_sentence_labels"][i] = packed["next_sentence_labels"][0, slot]
        start = packed["cls_positions"][0, slot]
        for p in np.flatnonzero(packed["masked_lm_weights"][0]):
            position = packed["masked_lm_positions"][0, p]
            if start <= position < start + n:
                k = int(alone["masked_lm_weights"][i].sum())
                alone["masked_lm_positions"][i, k] = position - start
                alone["masked_lm_ids"][i, k] = packed["masked_lm_ids"][0, p]
                alone["masked_lm_weights"][i, k] = 1.0
                where.append((p, i, k))
    assert len(where) == packed["masked_lm_weights"].sum() >= 3
    out_packed, out_alone = (model(**model_inputs(model, b)) for b in (packed, alone))
    for p, i, k in where:
        np.testing.assert_allclose(out_packed["masked_lm_logits"][0, p],
                                   out_alone["masked_lm_logits"][i, k], atol=1e-5)
    for slot, i in enumerate(rows.row(0)):
        np.testing.assert_allclose(out_packed["next_sentence_logits"][0, slot],
                                   out_alone["next_sentence_logits"][i], atol=1e-5)
    loss = losses.combined_loss({"mlm": 1.0, "nsp": 1.0})
    np.testing.assert_allclose(loss(out_packed, packed)[0], loss(out_alone, alone)[0], rtol=1e-5)
