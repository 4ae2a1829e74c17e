"""AdaLoRA's training side (Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient
Fine-Tuning", ICLR; the model side is `nlp_jax.models.peft.AdaLoRA`).

Each targeted projection k gets W_k + (alpha / r) P_k diag(Lambda_k) Q_k: r triplets
(P_k[:, i], lambda_k,i, Q_k[i, :]) that start at rank r. Training spends a global budget of
triplets: every `delta_t` steps the least important triplets across ALL matrices lose their
singular value, so that the matrices that matter keep more rank. Three pieces:

    orthogonality(params)     R = sum_k ||P_k^T P_k - I||_F^2 + ||Q_k Q_k^T - I||_F^2 (Eq. 4); the
                              step adds gamma * R to the loss, so that P and Q stay near
                              orthonormal and zeroing lambda_k,i removes one direction only.
    budget(t, ...)            b(t), the number of triplets kept after step t (Eq. 8, cubic).
    rank_allocator(inner,...) an optax wrapper around the whole optimiser: it smooths each
                              entry's importance from the raw gradients (Eqs. 5-7), lets `inner`
                              compute the updates, and then zeroes the pruned singular values.

Hyperparameters, with the paper's values (its GLUE scripts, QingruZhang/AdaLoRA/NLU/scripts):
    r (BertConfig.adalora_rank)  initial rank per matrix, ~1.5x the target: 12 -> 8 in the main
                                 tables, 2 -> 1 in the released scripts
    target_rank                  average final rank per matrix: b(T) = target_rank * #matrices
    beta1, beta2                 EMAs of sensitivity and uncertainty: 0.85 and 0.85
    gamma                        weight of R in the loss: 0.1 (0.3 on RTE)
    delta_t                      steps between allocations: 100 (SST-2, MNLI), 1 (RTE)
    t_init, t_final              steps at full budget first, at the final budget last: SST-2
                                 6000 and 22000 of ~50k (~12% and ~45% of T); RTE 600 and 1800
                                 of ~3.9k
    total_steps                  T, the run's step count

Where this departs from the reference code, and why:
  * A pruned triplet stays pruned: its lambda is held at exactly zero (the wrapper's update for it
    is -theta, so theta + update == 0 in floating point) and later allocations choose only among
    the survivors. The reference zeroes lambda at each allocation but lets it regrow in between
    and re-ranks all triplets; holding it makes the total rank follow b(t) exactly at every step
    and the mask a plain array in the optimiser state (checkpointed with it).
  * Sensitivity |theta * grad| uses the parameters the gradient was taken at (the reference
    multiplies the gradient by the parameters after the optimiser step).
  * The top-b(t) choice is exact (ties go to the earlier matrix); the reference thresholds at the
    k-th value, which can prune more than asked on ties.
  * `orthogonality` is the paper's sum of squared norms; `as_in_code=True` gives the reference
    code's gamma * mean_k ||.||_F (unsquared), the form its gamma = 0.1 was tuned with.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

MODULE, P, LAMBDA, Q = "adalora", "lora_p", "lora_lambda", "lora_q"


def _keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)


def _is_adalora(keys: tuple) -> bool:
    return MODULE in keys and keys[-1] in (P, LAMBDA, Q)


def _modules(tree) -> list[tuple]:
    """Key paths of the AdaLoRA modules in `tree` (dicts of P, Lambda and Q), in tree order."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [k[:-1] for k in (_keys(p) for p, _ in leaves) if k[-1] == LAMBDA and MODULE in k]


def _get(tree, keys: tuple):
    for k in keys:
        tree = tree[k]
    return tree


def orthogonality(params, as_in_code: bool = False) -> jax.Array:
    """R = sum over AdaLoRA modules of ||P^T P - I||_F^2 + ||Q Q^T - I||_F^2 (the paper's Eq. 4;
    both Gram matrices are r x r). as_in_code: the mean over the 2K matrices of the unsquared
    norms instead (QingruZhang/AdaLoRA and the peft library). 0 without AdaLoRA."""
    norms = []
    for keys in _modules(params):
        m = _get(params, keys)
        p, q = m[P].astype(jnp.float32), m[Q].astype(jnp.float32)
        eye = jnp.eye(p.shape[1], dtype=jnp.float32)
        for gram in (p.T @ p, q @ q.T):
            sq = jnp.sum(jnp.square(gram - eye))
            norms.append(jnp.sqrt(sq) if as_in_code else sq)
    if not norms:
        return jnp.zeros((), jnp.float32)
    total = sum(norms)
    return total / len(norms) if as_in_code else total


def total_rank(params) -> jax.Array:
    """The number of nonzero singular values over all AdaLoRA modules (int32)."""
    counts = [jnp.count_nonzero(_get(params, k)[LAMBDA]) for k in _modules(params)]
    return sum(counts, jnp.zeros((), jnp.int32)).astype(jnp.int32)


def budget(step, init_rank_total: int, target_rank_total: int, t_init: int, t_final: int,
           total_steps: int) -> jax.Array:
    """b(t), the paper's Eq. 8 (and the reference code's `schedule_threshold`): b(0) =
    init_rank_total while t <= t_init, b(T) = target_rank_total once t >= T - t_final, and between

        b(t) = b(T) + floor((b(0) - b(T)) * (1 - (t - t_init) / (T - t_init - t_final))^3)

    (the reference code truncates to an int too). `step` may be traced; an int32 array comes
    back. In float32, with a guard of 2^-19 (relative) so that a product that is a whole number,
    e.g. 27 * (2/3)^3, is not floored one too low."""
    span = total_steps - t_init - t_final
    if span <= 0:
        raise ValueError(f"AdaLoRA needs total_steps > t_init + t_final (got {total_steps}, "
                         f"{t_init}, {t_final})")
    t = jnp.asarray(step, jnp.float32)
    left = jnp.clip(1.0 - (t - t_init) / span, 0.0, 1.0)
    cubic = jnp.floor((init_rank_total - target_rank_total) * left ** 3 * (1 + 2.0 ** -19))
    b = target_rank_total + cubic.astype(jnp.int32)
    b = jnp.where(t <= t_init, init_rank_total, b)
    return jnp.where(t >= total_steps - t_final, target_rank_total, b).astype(jnp.int32)


class AdaLoRAState(NamedTuple):
    """The allocator's state: arrays only (Orbax checkpoints it). ipt, unc and mask are trees like
    the params, with optax.MaskedNode at every leaf that is not AdaLoRA's (as multi_transform
    leaves them), so that optax.tree_map_params shards them like their parameters."""
    count: jax.Array   # updates so far (int32)
    ipt: Any           # Ibar, the EMA of sensitivity I = |theta * grad| (Eq. 5), at P, Lambda, Q
    unc: Any           # Ubar, the EMA of uncertainty |I - Ibar| (Eq. 6), at P, Lambda, Q
    mask: Any          # bool [r] at each Lambda: False = pruned, for good
    inner: Any         # the wrapped optimiser's state


def _like_params(at_leaf, params, *rest):
    """A tree like `params`: at_leaf(name, x, *rest_x) at AdaLoRA's leaves, MaskedNode elsewhere."""
    return jax.tree_util.tree_map_with_path(
        lambda p, *x: at_leaf(_keys(p)[-1], *x) if _is_adalora(_keys(p)) else optax.MaskedNode(),
        params, *rest)


def rank_allocator(inner: optax.GradientTransformation, *, target_rank: int, t_init: int,
                   t_final: int, total_steps: int, delta_t: int = 100, beta1: float = 0.85,
                   beta2: float = 0.85) -> optax.GradientTransformation:
    """`inner` (the whole optimiser) with AdaLoRA's budget allocation around it.

    Update t (1-based, counted in the state), on the raw gradients and the current parameters:
      1. while t <= T - t_final: Ibar <- beta1 Ibar + (1 - beta1) I and Ubar <- beta2 Ubar +
         (1 - beta2) |I - Ibar| for every entry of P, Lambda and Q, I = |theta * grad| (Eqs. 5-6;
         then frozen, as in the reference, since the pattern is final);
      2. `inner` computes the updates from the same gradients;
      3. at t > t_init with t a multiple of delta_t, and at every t >= T - t_final: each
         surviving triplet's score S_i = s(lambda_i) + mean_j s(P_ji) + mean_j s(Q_ij), s =
         Ibar * Ubar (Eq. 7), and only the top b(t) over all matrices survive (global budget);
      4. a pruned lambda's update is -theta: it becomes exactly 0, now and at every later step.
    Other leaves' updates are `inner`'s, unchanged. target_rank: the average final rank per
    matrix (b(T) = target_rank * number of matrices); b(0) is the sum of the initial ranks."""
    if not (0 < beta1 < 1 and 0 < beta2 < 1):
        raise ValueError(f"AdaLoRA's beta1, beta2 must lie in (0, 1) (got {beta1}, {beta2})")
    if delta_t < 1 or total_steps <= t_init + t_final:
        raise ValueError(f"AdaLoRA needs delta_t >= 1 and total_steps > t_init + t_final (got "
                         f"{delta_t}, {total_steps}, {t_init}, {t_final})")

    def init(params):
        zeros = _like_params(lambda _, x: jnp.zeros(x.shape, jnp.float32), params)
        return AdaLoRAState(
            count=jnp.zeros((), jnp.int32), ipt=zeros, unc=zeros,
            mask=_like_params(lambda name, x: jnp.ones(x.shape, bool) if name == LAMBDA
                              else optax.MaskedNode(), params),
            inner=inner.init(params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("rank_allocator needs the params (sensitivity is |theta * grad|)")
        t = state.count + 1
        updates, inner_state = inner.update(grads, state.inner, params)   # 2. (order is free)
        modules = _modules(params)
        if not modules:
            return updates, state._replace(count=t, inner=inner_state)

        # 1. Sensitivity and uncertainty, smoothed (MaskedNode leaves have no leaves to map).
        track = t <= total_steps - t_final
        sens = _like_params(lambda _, x, g: jnp.abs(x * g).astype(jnp.float32), params, grads)
        ipt = jax.tree.map(lambda ib, i: jnp.where(track, beta1 * ib + (1 - beta1) * i, ib),
                           state.ipt, sens)
        unc = jax.tree.map(
            lambda ub, i, ib: jnp.where(track, beta2 * ub + (1 - beta2) * jnp.abs(i - ib), ub),
            state.unc, sens, ipt)

        # 3. Triplet scores and the global top-b(t) among the survivors.
        scores, old = [], []
        for keys in modules:
            s = jax.tree.map(jnp.multiply, _get(ipt, keys), _get(unc, keys))
            scores.append(s[LAMBDA] + s[P].mean(axis=0) + s[Q].mean(axis=1))
            old.append(_get(state.mask, keys)[LAMBDA])
        survives = jnp.concatenate(old)
        b = budget(t, survives.size, target_rank * len(modules), t_init, t_final, total_steps)
        ranked = jnp.where(survives, jnp.concatenate(scores), -jnp.inf)   # the pruned rank last
        order = jnp.argsort(ranked, descending=True, stable=True)
        place = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
        allocate = (t > t_init) & ((t % delta_t == 0) | (t >= total_steps - t_final))
        keep = jnp.where(allocate, survives & (place < b), survives)
        kept = dict(zip(modules, jnp.split(keep, np.cumsum([o.size for o in old])[:-1])))

        # 4. A pruned singular value goes to exactly zero and stays there.
        def hold(path, u, x):
            keys = _keys(path)
            if keys[-1] != LAMBDA or keys[:-1] not in kept:
                return u
            return jnp.where(kept[keys[:-1]], u, -x).astype(u.dtype)

        updates = jax.tree_util.tree_map_with_path(hold, updates, params)
        mask = jax.tree_util.tree_map_with_path(lambda p, _: kept[_keys(p)[:-1]], state.mask)
        return updates, AdaLoRAState(count=t, ipt=ipt, unc=unc, mask=mask, inner=inner_state)

    return optax.GradientTransformation(init, update)
