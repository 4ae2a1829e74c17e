"""The optimiser: AdamW with linear warm-up and decay, gradient clipping, and no weight decay on
LayerNorm parameters and biases (as in BERT)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
    """Linear warm-up to `cfg.learning_rate` over `cfg.warmup_steps`, then linear or cosine decay
    to zero at `num_steps`."""
    peak, warmup, total = cfg.learning_rate, cfg.warmup_steps, max(cfg.num_steps, 1)
    decay_steps = max(total - warmup, 1)
    if cfg.decay == "linear":
        decay = optax.linear_schedule(peak, 0.0, decay_steps)
    elif cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps)
    elif cfg.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"train.decay={cfg.decay!r}: choose linear, cosine or constant")
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params):
    """True for kernels and embeddings; False for biases and LayerNorm scales, by parameter name
    (a fused qkv bias is 3-D, so rank alone would not tell)."""
    def decays(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return not (name in ("bias", "scale") or name.endswith("_bias"))
    return jax.tree_util.tree_map_with_path(decays, params)


# ------------------------------------------------------------------------------------------
# Strategies (mostly for fine-tuning): optimizer choice, freezing, layer-wise learning-rate decay.


def _path(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)


def depth(path: tuple, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, num_layers + 1 for the pooler and heads."""
    if path[:2] == ("bert", "embeddings"):
        return 0
    if path[:2] == ("bert", "layers"):
        return int(path[2]) + 1
    return num_layers + 1


PEFT_METHODS = ("none", "lora", "adalora", "adapter", "bitfit")


def _peft_trains(path: tuple, method: str) -> bool:
    """Whether a parameter trains under parameter-efficient method `method`: the task heads
    always (anything outside the encoder); in the encoder, LoRA's A and B (lora), the adapters and
    the LayerNorms (adapter, as Houlsby et al. train them), or the biases and LayerNorms (bitfit,
    Ben Zaken et al. 2022)."""
    if path[0] != "bert":
        return True
    layer_norm = any("layer_norm" in str(k) for k in path)
    if method in ("lora", "adalora"):   # the module's key: peft/lora/... or peft/adalora/...
        return method in path
    if method == "adapter":
        return "adapters" in path or layer_norm
    if method == "bitfit":
        return path[-1] == "bias" or layer_norm
    raise ValueError(f"peft.method={method!r}: choose one of {', '.join(PEFT_METHODS)}")


def is_frozen(path: tuple, cfg, num_layers: int, peft_method: str = "none") -> bool:
    """cfg.freeze: "none" | "embeddings" | "encoder" (train the heads only); cfg.freeze_layers=N
    also freezes the embeddings and the bottom N layers; a PEFT method (peft_method) trains only
    its own parameters and the heads."""
    if peft_method != "none":
        return not _peft_trains(path, peft_method)
    freeze, layers = cfg.get("freeze", "none"), cfg.get("freeze_layers", 0)
    if freeze == "encoder":
        return path[0] == "bert"
    if freeze == "embeddings" and depth(path, num_layers) == 0:
        return True
    if freeze not in ("none", "embeddings"):
        raise ValueError(f"train.freeze={freeze!r}: choose none, embeddings or encoder")
    return 0 < layers and depth(path, num_layers) <= layers


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scales the gradients by min(1, max_norm / global norm): optax.clip_by_global_norm's rule,
    written as one multiply. optax selects between g and g / norm * max_norm per element, which
    XLA:CPU does not fuse into the AdamW update that reads the result: the clipped gradients are
    written out and read back (what it costs: docs/performance.md). Below the threshold the
    factor is exactly 1, so the gradients pass through unchanged."""
    def update(updates, state, params=None):
        del params
        factor = jnp.minimum(1.0, max_norm / optax.tree.norm(updates))
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _scale_by_path(scale_of) -> optax.GradientTransformation:
    """Multiplies each leaf by a constant chosen from its path (constants fold into the step)."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(
            lambda p, u: u if scale_of(_path(p)) == 1.0 else u * scale_of(_path(p)), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def trainable_mask(params, cfg, num_layers: int = 0, peft_method: str = "none"):
    """True for the parameters that train (see `is_frozen`), as a tree like `params`."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: not is_frozen(_path(p), cfg, num_layers, peft_method), params)


def make_optimizer(cfg, num_layers: int = 0, peft=None) -> optax.GradientTransformation:
    """cfg is `config.train`: optimizer (adamw | adam | sgd; default adamw), gradient clipping,
    and optionally freezing, a parameter-efficient method (peft_method) and layer-wise LR decay
    (num_layers: the encoder's layer count); `peft` is config.peft (None: no PEFT block).

    Frozen parameters get zero gradients before clipping (so they do not count in the norm), no
    optimiser state (`optax.multi_transform` gives them `set_to_zero`, so Adam's moments cover
    the trainable parameters only) and zero updates (weight decay cannot move them). With
    layerwise_lr_decay = d < 1, layer i's learning rate is scaled by d ** (num_layers + 1 - depth)
    (Howard & Ruder 2018; Clark et al. 2020): the heads get the full rate, embeddings the least."""
    peft_method = (peft or {}).get("method", "none")
    schedule = learning_rate_schedule(cfg)
    name, llrd = cfg.get("optimizer", "adamw"), cfg.get("layerwise_lr_decay", 1.0)
    if name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                          weight_decay=cfg.weight_decay, mask=decay_mask)
    elif name == "adam":
        opt = optax.adam(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps)
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9) or None)
    else:
        raise ValueError(f"train.optimizer={name!r}: choose adamw, adam or sgd")

    def frozen(path):
        return is_frozen(path, cfg, num_layers, peft_method)

    def lr_scale(path):
        return float(llrd ** (num_layers + 1 - depth(path, num_layers)))

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if frozen(_path(p)) else "train", params)

    zero_frozen = _scale_by_path(lambda p: 0.0 if frozen(p) else 1.0)
    clip = clip_by_global_norm(cfg.grad_clip_norm)
    if cfg.get("freeze", "none") == "none" and not cfg.get("freeze_layers", 0) \
            and peft_method == "none":   # everything trains
        return optax.chain(zero_frozen, clip, opt, _scale_by_path(lr_scale))
    tx = optax.chain(zero_frozen, clip, optax.multi_transform(
        {"train": optax.chain(opt, _scale_by_path(lr_scale)), "frozen": optax.set_to_zero()},
        labels))
    if peft_method != "adalora":
        return tx
    from nlp_jax.train import adalora  # pylint: disable=g-import-not-at-top
    # AdaLoRA's budget allocation sees the raw gradients, so it wraps the whole optimiser.
    return adalora.rank_allocator(
        tx, target_rank=peft.target_rank, t_init=int(peft.t_init * cfg.num_steps),
        t_final=int(peft.t_final * cfg.num_steps), total_steps=cfg.num_steps,
        delta_t=peft.delta_t, beta1=peft.beta1, beta2=peft.beta2)
