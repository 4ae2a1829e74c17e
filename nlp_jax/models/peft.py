"""Parameter-efficient fine-tuning inside each encoder layer: LoRA, AdaLoRA and adapters.

    LoRA (Hu et al. 2021)       W x + (alpha / r) B A x on the projections named in
                                `BertConfig.lora_targets` (query, key, value, attention_output,
                                intermediate, output), A [in, r] random, B [r, out] zero: at step
                                0 the model is the base model. Flax NNX's `nnx.LoRA` holds A and B
                                (as `nnx.LoRAParam`s); dropout on its input (`lora_dropout`).
    AdaLoRA (Zhang et al. 2023) W x + (alpha / r) P diag(Lambda) Q x on the same projections, an
                                SVD-shaped update of `adalora_rank` = r triplets: P [in, r] and
                                Q [r, out] Gaussian, the singular values Lambda [r] zero (so again
                                the base model at step 0). Training prunes triplets to a global
                                budget (nlp_jax/train/adalora.py); same scale and dropout as LoRA.
    Adapters (Houlsby et al.    a bottleneck h + up(gelu(down(h))) of `adapter_size` units on the
    2019)                       attention output and on the feed-forward output, each before its
                                residual connection and LayerNorm; `up` starts at zero, so the
                                adapter starts as the identity.

The parameters live under each layer's `peft` entry (`bert/layers/<i>/peft/...`), beside the base
weights, whose names are unchanged: a pretrained encoder loads as it is, and the optimiser tells
what trains by path (`nlp_jax/train/optim.py`). BitFit needs no module: it trains the biases and
LayerNorms already there.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

LORA_TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")


def _sharded(names: tuple) -> dict:
    # Logical axis names for nlp_jax.parallel, as the base weights carry them.
    return {"out_sharding": names, "eager_sharding": False}


# The reference implementation (QingruZhang/AdaLoRA, loralib.SVDLinear) draws P and Q from
# N(0, 0.02^2) and starts Lambda at zero.
ADALORA_INIT_STD = 0.02


class AdaLoRA(nnx.Module):
    """AdaLoRA's update x -> x P diag(Lambda) Q (Zhang et al. 2023, Eq. 3), unscaled.

    Lambda (`lora_lambda`) holds the singular values; the rank allocator zeroes the unimportant
    ones, and the orthogonality regulariser keeps P's columns and Q's rows near orthonormal, so
    that the triplets stay a (soft) SVD and pruning one removes little else."""

    def __init__(self, d_in: int, rank: int, d_out: int, in_axis: str, out_axis: str, dtype,
                 rngs: nnx.Rngs):
        init = nnx.initializers.normal(ADALORA_INIT_STD)
        self.lora_p = nnx.LoRAParam(init(rngs.params(), (d_in, rank)),
                                    **_sharded((in_axis, None)))
        self.lora_lambda = nnx.LoRAParam(jnp.zeros((rank,)), **_sharded((None,)))
        self.lora_q = nnx.LoRAParam(init(rngs.params(), (rank, d_out)),
                                    **_sharded((None, out_axis)))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        p, lam, q = (jnp.asarray(v[...], self.dtype)
                     for v in (self.lora_p, self.lora_lambda, self.lora_q))
        # (x P) * Lambda scales the r columns: never the [in, out] product.
        return ((jnp.asarray(x, self.dtype) @ p) * lam) @ q


class Adapter(nnx.Module):
    """h -> h + up(gelu(down(h))), `up` zero at initialisation (the identity)."""

    def __init__(self, hidden: int, size: int, initializer_range: float, dtype, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(initializer_range)
        self.down = nnx.Linear(hidden, size, dtype=dtype, rngs=rngs,
                               kernel_init=nnx.with_partitioning(init, ("embed", None),
                                                                 eager_sharding=False),
                               bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(),
                                                               (None,), eager_sharding=False))
        self.up = nnx.Linear(size, hidden, dtype=dtype, rngs=rngs,
                             kernel_init=nnx.with_partitioning(nnx.initializers.zeros_init(),
                                                               (None, "embed"),
                                                               eager_sharding=False),
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(),
                                                             ("embed",), eager_sharding=False))

    def __call__(self, h: jax.Array) -> jax.Array:
        return h + self.up(jax.nn.gelu(self.down(h), approximate=False))


class LayerPeft(nnx.Module):
    """One encoder layer's LoRA or AdaLoRA matrices and adapters (those its config asks for)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        adalora_rank = cfg.adalora_rank
        if cfg.lora_rank and adalora_rank:   # one update per projection: which would it be?
            raise ValueError("lora_rank and adalora_rank are both set: choose one low-rank update")
        self.rank = cfg.lora_rank or adalora_rank
        # alpha / r for both, r AdaLoRA's initial rank (as the reference code scales it).
        self.scale = cfg.lora_alpha / max(self.rank, 1)
        self.rate = cfg.lora_dropout
        h, m = cfg.hidden_size, cfg.intermediate_size
        shapes = {"query": (h, h, "embed"), "key": (h, h, "embed"), "value": (h, h, "embed"),
                  "attention_output": (h, h, "embed"), "intermediate": (h, m, "mlp"),
                  "output": (m, h, "embed")}
        in_axis = {"output": "mlp"}
        unknown = set(cfg.lora_targets) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f"peft.targets {sorted(unknown)} are not projections: choose from "
                             f"{', '.join(LORA_TARGETS)}")
        self.lora = nnx.Dict({
            t: nnx.LoRA(shapes[t][0], cfg.lora_rank, shapes[t][1], dtype=cfg.dtype, rngs=rngs,
                        a_metadata=_sharded((in_axis.get(t, "embed"), None)),
                        b_metadata=_sharded((None, shapes[t][2])))
            for t in cfg.lora_targets} if cfg.lora_rank else {})
        self.adalora = nnx.Dict({
            t: AdaLoRA(shapes[t][0], adalora_rank, shapes[t][1], in_axis.get(t, "embed"),
                       shapes[t][2], cfg.dtype, rngs)
            for t in cfg.lora_targets} if adalora_rank else {})
        self.adapters = nnx.Dict({
            t: Adapter(h, cfg.adapter_size, cfg.initializer_range, cfg.dtype, rngs)
            for t in ("attention", "output")} if cfg.adapter_size else {})

    def delta(self, target: str, x: jax.Array, rng) -> jax.Array | None:
        """LoRA's (alpha / r) x A B or AdaLoRA's (alpha / r) x P diag(Lambda) Q for `target`, or
        None where it has neither."""
        if target in self.lora:
            update = self.lora[target]
        elif target in self.adalora:
            update = self.adalora[target]
        else:
            return None
        if rng is not None and self.rate:
            from nlp_jax.models.bert import dropout  # pylint: disable=g-import-not-at-top
            x = dropout(x, self.rate, jax.random.fold_in(rng, LORA_TARGETS.index(target)))
        return update(x) * jnp.asarray(self.scale, x.dtype)

    def adapt(self, where: str, h: jax.Array) -> jax.Array:
        return self.adapters[where](h) if where in self.adapters else h


def merge_lora(params: dict, cfg) -> dict:
    """The encoder's params with every LoRA update folded into its base kernel (W + s A B), and
    every AdaLoRA update likewise (W + s P diag(Lambda) Q), their matrices dropped: a plain encoder
    with the same outputs (for --mode export)."""
    n, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    layers = {}
    for i, layer in params["layers"].items():
        layer = dict(layer)
        peft = layer.pop("peft", {})
        for target, lora in peft.get("lora", {}).items():
            update = (lora["lora_a"] @ lora["lora_b"]) * (cfg.lora_alpha / cfg.lora_rank)
            layer = _fold(layer, target, update, n, d)
        for target, ada in peft.get("adalora", {}).items():
            update = ((ada["lora_p"] * ada["lora_lambda"]) @ ada["lora_q"]) * (
                cfg.lora_alpha / cfg.adalora_rank)
            layer = _fold(layer, target, update, n, d)
        if peft.get("adapters"):
            raise ValueError("adapters add layers; only LoRA and AdaLoRA merge into the base "
                             "weights")
        layers[i] = layer
    return {**params, "layers": layers}


def _fold(layer: dict, target: str, update: jax.Array, n: int, d: int) -> dict:
    """`layer` with the [in, out] `update` added to `target`'s kernel, in that kernel's layout."""
    if target in ("query", "key", "value"):
        j = ("query", "key", "value").index(target)
        kernel = layer["qkv"]["kernel"]
        return {**layer, "qkv": {**layer["qkv"], "kernel": kernel.at[:, j].add(
            update.reshape(-1, n, d))}}
    if target == "attention_output":
        kernel = layer["attention_output"]["kernel"]
        return {**layer, "attention_output": {**layer["attention_output"],
                                              "kernel": kernel + update.reshape(n, d, -1)}}
    return {**layer, target: {**layer[target], "kernel": layer[target]["kernel"] + update}}
