"""The optimiser: AdamW with linear warm-up and decay, gradient clipping, and no weight decay on
LayerNorm parameters and biases (as in BERT)."""
from __future__ import annotations

import jax
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


def make_optimizer(cfg) -> optax.GradientTransformation:
    """cfg is `config.train`."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                    weight_decay=cfg.weight_decay, mask=decay_mask),
    )
