"""Parameter-efficient fine-tuning inside each encoder layer: LoRA and adapters.

    LoRA (Hu et al. 2021)       W x + (alpha / r) B A x on the projections named in
                                `BertConfig.lora_targets` (query, key, value, attention_output,
                                intermediate, output), A [in, r] random, B [r, out] zero: at step
                                0 the model is the base model. Flax NNX's `nnx.LoRA` holds A and B
                                (as `nnx.LoRAParam`s); dropout on its input (`lora_dropout`).
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
    """One encoder layer's LoRA matrices and adapters (those its config asks for)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.rank, self.scale = cfg.lora_rank, cfg.lora_alpha / max(cfg.lora_rank, 1)
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
        self.adapters = nnx.Dict({
            t: Adapter(h, cfg.adapter_size, cfg.initializer_range, cfg.dtype, rngs)
            for t in ("attention", "output")} if cfg.adapter_size else {})

    def delta(self, target: str, x: jax.Array, rng) -> jax.Array | None:
        """LoRA's (alpha / r) B A x for `target`, or None where it has no LoRA."""
        if target not in self.lora:
            return None
        if rng is not None and self.rate:
            from nlp_jax.models.bert import dropout  # pylint: disable=g-import-not-at-top
            x = dropout(x, self.rate, jax.random.fold_in(rng, LORA_TARGETS.index(target)))
        return self.lora[target](x) * jnp.asarray(self.scale, x.dtype)

    def adapt(self, where: str, h: jax.Array) -> jax.Array:
        return self.adapters[where](h) if where in self.adapters else h


def merge_lora(params: dict, cfg) -> dict:
    """The encoder's params with every LoRA update folded into its base kernel (W + s A B), the
    LoRA matrices dropped: a plain encoder with the same outputs (for --mode export)."""
    n, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    layers = {}
    for i, layer in params["layers"].items():
        layer = dict(layer)
        peft = layer.pop("peft", {})
        for target, lora in peft.get("lora", {}).items():
            update = (lora["lora_a"] @ lora["lora_b"]) * (cfg.lora_alpha / cfg.lora_rank)
            if target in ("query", "key", "value"):
                j = ("query", "key", "value").index(target)
                kernel = layer["qkv"]["kernel"]
                layer["qkv"] = {**layer["qkv"], "kernel": kernel.at[:, j].add(
                    update.reshape(-1, n, d))}
            elif target == "attention_output":
                kernel = layer["attention_output"]["kernel"]
                layer["attention_output"] = {**layer["attention_output"],
                                             "kernel": kernel + update.reshape(n, d, -1)}
            else:
                layer[target] = {**layer[target], "kernel": layer[target]["kernel"] + update}
        if peft.get("adapters"):
            raise ValueError("adapters add layers; only LoRA merges into the base weights")
        layers[i] = layer
    return {**params, "layers": layers}
