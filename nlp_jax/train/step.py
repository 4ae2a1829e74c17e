"""The train state and the jitted train/eval steps.

The state is a plain dict of arrays, so Orbax saves it as it is and the step is a pure function:

    state = {"step": int32[], "params": {...}, "opt_state": optax state, "rng": uint32[2]}

The model's graph definition is split off once (`nnx.split`); inside the jitted step the params
are merged back (`nnx.merge`) and differentiated as a plain pytree. Dropout keys come from
`fold_in(rng, step)`, so a resumed run draws exactly the masks an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nlp_jax import parallel
from nlp_jax.train import adalora


@dataclasses.dataclass
class Steps:
    """Everything the loop needs to run a model: shardings, and the jitted functions."""
    graphdef: Any
    state_shardings: dict
    abstract_state: dict          # ShapeDtypeStructs with shardings, the target for restoring
    init: Callable                # () -> state
    train: Callable               # (state, batch) -> (state, metrics); see make_steps
    evaluate: Callable            # (params, batch) -> metrics
    jit_train: Callable           # k -> `train` running k steps per call


def model_inputs(model, batch: dict) -> dict:
    """The batch entries the model's __call__ takes (its `input_keys`)."""
    return {k: batch[k] for k in model.input_keys if k in batch}


def _with_loss(loss, metrics):
    """The loss is always logged as `loss` (combined_loss already reports it so)."""
    return loss, {"loss": loss, **metrics}


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """Remedies for overfitting that change what a training step computes (config.train keys).

    rdrop_alpha > 0: R-Drop (Liang et al. 2021): two dropout passes of the batch; the loss is their
      mean plus alpha times `rdrop_kl`, logged as `rdrop_loss`.
    adversarial = "fgm" (Miyato et al. 2017): one more pass with the word embeddings moved by
      epsilon * g / ||g|| (g: the loss's gradient with respect to the embedding table); "pgd"
      (Madry et al. 2018): `adversarial_steps` ascent steps of epsilon / steps each, projected onto
      the epsilon ball. The loss at the perturbed embeddings, logged as `adversarial_loss`, adds
      its gradients (at the perturbed point) to the clean ones.
    """
    rdrop_alpha: float = 0.0
    adversarial: str = "none"
    adversarial_epsilon: float = 1.0
    adversarial_steps: int = 3
    adalora_gamma: float | None = None   # AdaLoRA: weight of `adalora.orthogonality` in the loss
                                         # (logged as orthogonality_loss), and the train rows
                                         # carry adalora_total_rank; None: no AdaLoRA

    @classmethod
    def from_config(cls, t, peft=None) -> "Regularizers":
        """From config.train and config.peft."""
        adalora = (peft or {}).get("method", "none") == "adalora"
        r = cls(rdrop_alpha=float(t.get("rdrop_alpha", 0.0)),
                adversarial=t.get("adversarial", "none"),
                adversarial_epsilon=float(t.get("adversarial_epsilon", 1.0)),
                adversarial_steps=int(t.get("adversarial_steps", 3)),
                adalora_gamma=float(peft.orth_gamma) if adalora else None)
        if r.adversarial not in ("none", "fgm", "pgd"):
            raise ValueError(f"train.adversarial={r.adversarial!r}: choose none, fgm or pgd")
        if r.rdrop_alpha < 0 or r.adversarial_epsilon <= 0 or r.adversarial_steps < 1:
            raise ValueError("train.rdrop_alpha must be >= 0, train.adversarial_epsilon > 0 and "
                             "train.adversarial_steps >= 1")
        return r


def rdrop_kl(logits_a, logits_b, weights) -> jax.Array:
    """R-Drop's term: the symmetric KL, (KL(p_a || p_b) + KL(p_b || p_a)) / 2, of the two passes'
    class distributions over the last axis, averaged with `weights` (examples, or tokens)."""
    la, lb = (jax.nn.log_softmax(x.astype(jnp.float32), -1) for x in (logits_a, logits_b))
    kl = 0.5 * ((jnp.exp(la) * (la - lb)).sum(-1) + (jnp.exp(lb) * (lb - la)).sum(-1))
    return (kl * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


def _logit_weights(outputs, batch):
    """The weights R-Drop averages its KL with: per token for token logits, else per example."""
    logits = outputs["logits"]
    if logits.ndim == batch["input_ids"].ndim + 1 and "label_weights" in batch:
        weights = batch["label_weights"].astype(jnp.float32)
        if "example_weights" in batch:
            weights = weights * batch["example_weights"][:, None]
        return weights
    return batch.get("example_weights", jnp.ones(logits.shape[:1], jnp.float32))


_EMBEDDING = ("bert", "embeddings", "word_embeddings", "embedding")


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _unit(g, epsilon):
    return epsilon * g / jnp.maximum(jnp.linalg.norm(g), 1e-12)


def make_steps(make_model: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
               loss_fn: Callable, mesh, rules: dict, *, seed: int, grad_accum_steps: int = 1,
               schedule: Callable | None = None, model_kwargs: dict | None = None,
               steps_per_execution: int = 1,
               regularizers: Regularizers = Regularizers()) -> Steps:
    """Builds the sharded, jitted init/train/eval functions.

    model_kwargs: fixed keyword arguments of every model call (e.g. which task head to run).
    steps_per_execution: K > 1 makes `train` run K steps in one call (a lax.scan over a leading
    axis of K batches; metrics come back with that axis), with exactly the updates and dropout
    keys of K single steps. Why: XLA:CPU allocates a step's temporaries afresh on every call
    and the kernel faults each page in again, so one call per K steps pays that once (measured in
    docs/performance.md); it also saves K - 1 dispatches on any backend.

    make_model(rngs) builds the model; loss_fn(outputs, batch) -> (loss, metrics).
    regularizers: R-Drop and adversarial training (see `Regularizers`)."""
    abstract_model = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract_model)
    param_sh = parallel.param_shardings(abstract_params, mesh, rules)
    repl = parallel.replicated(mesh)

    def init_fn():
        param_key, dropout_key = jax.random.split(jax.random.key(seed))
        params = nnx.to_pure_dict(nnx.state(make_model(nnx.Rngs(params=param_key))))
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": tx.init(params), "rng": jax.random.key_data(dropout_key)}

    shapes = jax.eval_shape(init_fn)
    # Optimiser state sharded as its parameter; a frozen parameter has none (optax's MaskedNode).
    masked = lambda x: isinstance(x, optax.MaskedNode)
    opt_sh = optax.tree_map_params(tx, lambda x, s: x if masked(x) else s, shapes["opt_state"],
                                   param_sh, transform_non_params=lambda _: repl, is_leaf=masked)
    state_sh = {"step": repl, "params": param_sh, "opt_state": opt_sh, "rng": repl}
    abstract_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                  shapes, state_sh)
    # Initialise directly into the sharded layout: a large model never sits on one device.
    init = jax.jit(init_fn, out_shardings=state_sh)

    reg = regularizers

    def loss_of(p, batch, rng):
        loss, metrics = task_loss(p, batch, rng)
        if reg.adalora_gamma is None:
            return loss, metrics
        # AdaLoRA keeps P and Q near orthonormal, in its reference code's form (adalora.py).
        orth = adalora.orthogonality(p, as_in_code=True)
        loss = loss + reg.adalora_gamma * orth
        return loss, {**metrics, "orthogonality_loss": orth, "loss": loss}

    def task_loss(p, batch, rng):
        model = nnx.merge(graphdef, p)
        run = lambda key: model(**model_inputs(model, batch), **(model_kwargs or {}),
                                dropout_rng=key)
        if not reg.rdrop_alpha:
            return _with_loss(*loss_fn(run(rng), batch))
        key_a, key_b = jax.random.split(rng)
        out_a, out_b = run(key_a), run(key_b)
        (loss_a, metrics), (loss_b, _) = loss_fn(out_a, batch), loss_fn(out_b, batch)
        kl = rdrop_kl(out_a["logits"], out_b["logits"], _logit_weights(out_a, batch))
        loss = (loss_a + loss_b) / 2 + reg.rdrop_alpha * kl
        return loss, {**metrics, "rdrop_loss": kl, "loss": loss}

    def loss_and_grads(params, batch, rng):
        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        (loss, metrics), grads = grad_fn(params, batch, rng)
        if reg.adversarial == "none":
            return (loss, metrics), grads
        # Ascend on the embedding table from the clean gradient (PGD: several projected steps).
        table, delta, g = _get(params, _EMBEDDING), 0.0, _get(grads, _EMBEDDING)
        n = 1 if reg.adversarial == "fgm" else reg.adversarial_steps
        for i in range(n):
            if i:   # the gradient at the current perturbation
                g = _get(grad_fn(_set(params, _EMBEDDING, table + delta), batch, rng)[1],
                         _EMBEDDING)
            delta = delta + _unit(g, reg.adversarial_epsilon / n)
            if reg.adversarial == "pgd":   # back onto the epsilon ball
                norm = jnp.linalg.norm(delta)
                delta = delta * jnp.minimum(1.0, reg.adversarial_epsilon / jnp.maximum(norm, 1e-12))
        (adv_loss, _), adv_grads = grad_fn(_set(params, _EMBEDDING, table + delta), batch, rng)
        grads = jax.tree.map(jnp.add, grads, adv_grads)
        return (loss, {**metrics, "adversarial_loss": adv_loss}), grads

    def train_fn(state, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        if grad_accum_steps == 1:
            (_, metrics), grads = loss_and_grads(state["params"], batch, rng)
        else:
            # Micro-batches in sequence; gradients and metrics are averaged over them.
            micro = jax.tree.map(
                lambda x: x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]),
                batch)

            def body(carry, xs):
                i, mb = xs
                (_, m), g = loss_and_grads(state["params"], mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (g, m)), None

            zeros = jax.eval_shape(lambda: loss_and_grads(state["params"], jax.tree.map(
                lambda x: x[0], micro), rng))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zeros[1], zeros[0][1]))
            (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro))
            grads, metrics = jax.tree.map(lambda x: x / grad_accum_steps, (grads, metrics))
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if reg.adalora_gamma is not None:
            metrics["adalora_total_rank"] = adalora.total_rank(params)
        if schedule is not None:
            metrics["learning_rate"] = schedule(state["step"])
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                     "rng": state["rng"]}
        return new_state, metrics

    batch_sh = parallel.batch_sharding(mesh)

    def jit_train(k: int) -> Callable:
        if k == 1:
            return jax.jit(train_fn, in_shardings=(state_sh, batch_sh),
                           out_shardings=(state_sh, repl), donate_argnums=0)
        return jax.jit(lambda state, batches: jax.lax.scan(train_fn, state, batches),
                       in_shardings=(state_sh, parallel.batch_sharding(mesh, stacked=True)),
                       out_shardings=(state_sh, repl), donate_argnums=0)

    def eval_fn(params, batch):
        model = nnx.merge(graphdef, params)
        return _with_loss(*loss_fn(model(**model_inputs(model, batch), **(model_kwargs or {})),
                                   batch))[1]

    evaluate = jax.jit(eval_fn, in_shardings=(param_sh, batch_sh), out_shardings=repl)
    return Steps(graphdef, state_sh, abstract_state, init, jit_train(steps_per_execution), evaluate,
                 jit_train)
