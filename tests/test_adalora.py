"""AdaLoRA (Zhang et al. 2023): the SVD-form update starts as the base model and merges into it; the
budget schedule, the orthogonality regulariser and the importance EMAs against hand values; the
rank allocator prunes to exactly b(t) triplets, the most important ones, and pruned singular
values stay exactly zero."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nlp_jax.models import peft
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train import adalora
from nlp_jax.train.checkpoint import overlay

CFG = BertConfig.from_preset("tiny", vocab_size=60)
ADA = dataclasses.replace(CFG, adalora_rank=4, lora_targets=peft.LORA_TARGETS)
IDS = jnp.asarray(np.random.default_rng(0).integers(5, 60, (2, 12)))


def model_with(cfg, seed):
    return BertForTasks(cfg, {"t": ("classification", 3)}, nnx.Rngs(seed))


def with_params(model, params):
    """A copy of `model` with `params` loaded where they fit (as init_from loads a base)."""
    graphdef, state = nnx.split(nnx.clone(model))
    nnx.replace_by_pure_dict(state, overlay(nnx.to_pure_dict(state), params))
    return nnx.merge(graphdef, state)


def pure(model):
    return nnx.to_pure_dict(nnx.state(model))


def logits(model):
    return model(IDS, task="t")["logits"]


# Built once, and only one model initialised: on a slow CPU that costs seconds.
@pytest.fixture(scope="module")
def ada():
    model = model_with(ADA, seed=1)
    assert model.bert.layers[0].peft is not None, (
        "Layer builds no LayerPeft for adalora_rank: bert.Layer.__init__ must test "
        "`cfg.lora_rank or cfg.adapter_size or cfg.adalora_rank`")
    return model


@pytest.fixture(scope="module")
def base(ada):
    """The plain model with the AdaLoRA model's base weights (built abstract, then filled)."""
    return with_params(nnx.eval_shape(lambda: model_with(CFG, seed=0)), pure(ada))


def normal_like(tree, seed):   # numpy draws: one jax.random call per shape would compile each
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), tree)


def with_random_lambda(params, seed=0):
    draws = normal_like(params, seed)
    return jax.tree_util.tree_map_with_path(
        lambda p, x, r: r if "lora_lambda" in str(p) else x, params, draws)


def test_adalora_starts_as_the_base_model(base, ada):
    triplet = pure(ada)["bert"]["layers"][1]["peft"]["adalora"]["output"]
    assert triplet["lora_p"].shape == (CFG.intermediate_size, 4)
    assert triplet["lora_q"].shape == (4, CFG.hidden_size)
    assert np.all(triplet["lora_lambda"] == 0) and np.all(triplet["lora_p"] != 0)
    np.testing.assert_array_equal(logits(ada), logits(base))


def test_merged_adalora_gives_the_same_logits(base, ada):
    params = with_random_lambda(pure(ada))
    ada_logits = logits(with_params(ada, params))
    merged = {**params, "bert": peft.merge_lora(params["bert"], ADA)}
    assert not np.allclose(ada_logits, logits(base), atol=1e-3)
    np.testing.assert_allclose(logits(with_params(base, merged)), ada_logits, atol=1e-5)


def test_budget_against_hand_values():
    # T = 20, t_init = 4, t_final = 6: the cubic runs over 10 steps, from 24 down to 8.
    b = lambda t: int(adalora.budget(t, 24, 8, 4, 6, 20))
    assert [b(t) for t in (0, 1, 4)] == [24, 24, 24]            # full budget through t_init
    assert b(6) == 8 + 8 and b(9) == 8 + 2 and b(13) == 8      # 16 * 0.8^3 = 8.19, 16 * 0.5^3
    assert [b(t) for t in (14, 17, 20, 25)] == [8] * 4         # b(T) for the last t_final steps
    # 27 (2/3)^3 and 27 (1/3)^3 are 8 and 1 exactly (float32 alone gives 7.99..., 0.99...).
    assert [int(adalora.budget(t, 35, 8, 3, 3, 9)) for t in (4, 5)] == [8 + 8, 8 + 1]
    # The same values from a traced step.
    jitted = jax.jit(lambda t: adalora.budget(t, 24, 8, 4, 6, 20))
    assert [int(jitted(t)) for t in range(21)] == [b(t) for t in range(21)]
    with pytest.raises(ValueError):
        adalora.budget(0, 24, 8, 10, 10, 20)


def test_orthogonality_against_a_hand_computation():
    def module(p, q):
        return {"lora_p": jnp.asarray(p, jnp.float32), "lora_lambda": jnp.ones(2),
                "lora_q": jnp.asarray(q, jnp.float32)}
    # P^T P = diag(1, 4): 3^2; Q Q^T = diag(2, 1): 1^2.  P^T P = ones: 1 + 1; Q Q^T = I: 0.
    first = module([[1, 0], [0, 2], [0, 0]], [[1, 1, 0], [0, 0, 1]])
    second = module([[1, 1], [0, 0], [0, 0]], [[1, 0, 0], [0, 1, 0]])
    params = {"bert": {"layers": {0: {"peft": {"adalora": {"query": first, "value": second},
                                              "lora": {"key": {"lora_a": jnp.ones((3, 2)),
                                                               "lora_b": jnp.ones((2, 3))}}}}}},
              "heads": {"t": {"kernel": jnp.ones((3, 3))}}}
    assert float(adalora.orthogonality(params)) == 9 + 1 + 2 + 0
    np.testing.assert_allclose(float(adalora.orthogonality(params, as_in_code=True)),
                               (3 + 1 + np.sqrt(2) + 0) / 4, rtol=1e-6)
    assert float(adalora.orthogonality({"heads": params["heads"]})) == 0


# One allocator, compiled once for the two tests that run it on the model's params.
T, T_INIT, T_FINAL, DELTA_T = 24, 4, 8, 3


@pytest.fixture(scope="module")
def allocator():
    # sgd inner (compiles faster than adam): a kept Lambda after a step is theta - 0.01 g != 0
    tx = adalora.rank_allocator(optax.sgd(1e-2), target_rank=1, t_init=T_INIT, t_final=T_FINAL,
                                total_steps=T, delta_t=DELTA_T)   # beta1 = beta2 = 0.85

    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return tx, jax.jit(step)


def test_importance_emas_against_a_hand_computation(ada, allocator):
    tx, step = allocator
    params = with_random_lambda(pure(ada))
    state = tx.init(params)
    path = ("bert", "layers", 1, "peft", "adalora", "value")
    at = lambda tree, name, i: float(np.asarray(adalora._get(tree, path)[name]).flat[i])
    entries = {("lora_lambda", 2): [0.0, 0.0], ("lora_p", 7): [0.0, 0.0]}   # Ibar, Ubar
    for seed in (1, 2):
        grads = normal_like(params, seed)
        for (name, i), emas in entries.items():   # Eqs. 5-6, the new Ibar inside Ubar
            sens = abs(at(params, name, i) * at(grads, name, i))
            emas[0] = 0.85 * emas[0] + 0.15 * sens
            emas[1] = 0.85 * emas[1] + 0.15 * abs(sens - emas[0])
        params, state = step(grads, state, params)   # step 2's sensitivity: the new theta
        for (name, i), (ibar, ubar) in entries.items():
            np.testing.assert_allclose(at(state.ipt, name, i), ibar, rtol=1e-5)
            np.testing.assert_allclose(at(state.unc, name, i), ubar, rtol=1e-5)
    assert all(ibar > 0 and ubar > 0 for ibar, ubar in entries.values())
    assert int(state.count) == 2 and int(adalora.total_rank(params)) == 4 * 6 * 2  # no pruning


def test_allocation_keeps_the_highest_triplet_scores():
    # Two modules of rank 3, one step with t_init = 0: after it Ibar = (1 - b1) I and Ubar =
    # (1 - b2) b1 I, so s = Ibar Ubar is a multiple of I^2, and S_i (Eq. 7) follows by hand.
    rng = np.random.default_rng(3)
    shapes = {"lora_p": (5, 3), "lora_lambda": (3,), "lora_q": (3, 4)}
    module = lambda: {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    params = {"bert": {"layers": {0: {"peft": {"adalora": {"query": module(), "value": module()}},
                                      "output": {"kernel": jnp.ones((4, 4))}}}}}
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    tx = adalora.rank_allocator(optax.sgd(0.5), target_rank=1, t_init=0, t_final=0,
                                total_steps=2, delta_t=1)   # b(1) = 2 + floor(4 * 0.5^3) = 2
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    ada_of = lambda tree, t: tree["bert"]["layers"][0]["peft"]["adalora"][t]
    sq = lambda t, k: (np.asarray(ada_of(params, t)[k]) * np.asarray(ada_of(grads, t)[k])) ** 2
    score = np.concatenate([sq(t, "lora_lambda") + sq(t, "lora_p").mean(0) +
                            sq(t, "lora_q").mean(1) for t in ("query", "value")])
    top = np.argsort(-score)[:2]
    new = optax.apply_updates(params, updates)
    lam = np.concatenate([np.asarray(ada_of(new, t)["lora_lambda"]) for t in ("query", "value")])
    assert set(np.flatnonzero(lam)) == set(top)
    # On this draw Lambda alone would keep others: the P and Q terms count.
    alone = np.concatenate([sq(t, "lora_lambda") for t in ("query", "value")])
    assert set(np.argsort(-alone)[:2]) != set(top)
    # Everything else, the kept Lambda included, moves as the inner optimiser says: -0.5 g.
    for (path, u), g in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(grads)):
        if "lora_lambda" not in str(path):
            np.testing.assert_array_equal(u, -0.5 * np.asarray(g), err_msg=str(path))
    lam_updates = np.concatenate([ada_of(updates, t)["lora_lambda"] for t in ("query", "value")])
    lam_grads = np.concatenate([ada_of(grads, t)["lora_lambda"] for t in ("query", "value")])
    np.testing.assert_array_equal(lam_updates[top], -0.5 * lam_grads[top])


def test_allocator_prunes_to_the_budget_and_pruned_values_stay_zero(ada, allocator):
    tx, step = allocator
    params = pure(ada)
    state = tx.init(params)
    b0, bT = 4 * 6 * 2, 1 * 6 * 2   # rank 4 -> 1 on 6 projections in 2 layers
    modules = [(i, t) for i in (0, 1) for t in peft.LORA_TARGETS]
    lambdas = lambda tree: np.concatenate([np.asarray(
        tree["bert"]["layers"][i]["peft"]["adalora"][t]["lora_lambda"]) for i, t in modules])
    pruned, expected, seen = np.zeros(b0, bool), b0, set()
    for t in range(1, T + 1):
        params, state = step(normal_like(params, t), state, params)
        lam = lambdas(params)
        assert np.all(lam[pruned] == 0), f"a pruned singular value moved at step {t}"
        if t > T_INIT and (t % DELTA_T == 0 or t >= T - T_FINAL):   # an allocation step
            expected = int(adalora.budget(t, b0, bT, T_INIT, T_FINAL, T))
        assert int(adalora.total_rank(params)) == expected == np.count_nonzero(lam), t
        np.testing.assert_array_equal(lambdas(state.mask), lam != 0)
        pruned, seen = lam == 0, seen | {expected}
    assert expected == bT and len(seen) > 4   # the budget went down in steps to b(T)
