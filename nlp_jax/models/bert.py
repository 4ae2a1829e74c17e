"""BERT (Devlin et al., 2018) in Flax NNX: the encoder and its pretraining heads.

Post-LayerNorm Transformer layers exactly as in the original BERT, so published checkpoints load
unchanged. Every parameter carries logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`,
`norm`); `nlp_jax.parallel` maps them to mesh axes, which makes data, FSDP and tensor parallelism
a config change. Parameters are float32; `dtype` sets the compute dtype (bfloat16 on accelerators).

Dropout takes an explicit key (`dropout_rng`), so the model holds no RNG state and a train step
stays a pure function of (params, batch, key); `dropout_rng=None` means evaluation.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Preset sizes (name -> layers, hidden, heads); intermediate size is 4x hidden as in BERT.
PRESETS = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1            # hidden dropout (embeddings, attention output, feed-forward)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    dtype: str = "float32"               # compute dtype; parameters stay float32
    remat: bool = False                  # recompute each layer's activations in the backward pass
                                         # (the layers then run as a lax.scan, see _scan_remat)
    attention_impl: str | None = None    # None: einsum on CPU, else jax.nn.dot_product_attention's
                                         # choice; or 'einsum', 'xla', 'cudnn' (see `attention`)
    position_embedding: str = "absolute"  # 'absolute': BERT's learned table (published checkpoints);
                                         # 'rotary': RoPE on queries and keys (Su et al., 2021)
    # Parameter-efficient fine-tuning inside each layer (nlp_jax/models/peft.py); 0: none.
    lora_rank: int = 0                   # LoRA's r on the projections named in lora_targets
    lora_alpha: float = 16.0             # LoRA's update scale is lora_alpha / lora_rank
    lora_dropout: float = 0.0            # dropout on LoRA's input
    lora_targets: tuple = ()             # some of peft.LORA_TARGETS
    adapter_size: int = 0                # Houlsby adapters' bottleneck
    adalora_rank: int = 0                # AdaLoRA's initial rank r per projection in lora_targets
                                         # (P diag(Lambda) Q, scaled by lora_alpha / r, with
                                         # lora_dropout); excludes lora_rank

    def __post_init__(self):   # a tuple, also when read back from JSON (hashable: a static field)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BertConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model size {name!r}: choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        fields = dict(num_layers=layers, hidden_size=hidden, num_heads=heads)
        fields.update(overrides)
        fields.setdefault("intermediate_size", 4 * fields["hidden_size"])
        return cls(**fields)


# Logical axis names are metadata only (eager_sharding=False): placement is decided once, by
# nlp_jax.parallel, when the train state is created under jit with explicit out_shardings.
def _init(cfg: BertConfig, names: tuple):
    return nnx.with_partitioning(nnx.initializers.truncated_normal(cfg.initializer_range), names,
                                 eager_sharding=False)


def _zeros(names: tuple):
    return nnx.with_partitioning(nnx.initializers.zeros_init(), names, eager_sharding=False)


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=cfg.dtype,
                         use_fast_variance=False,
                         scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",),
                                                          eager_sharding=False),
                         bias_init=_zeros(("norm",)), rngs=rngs)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `rng` is None (evaluation) or `rate` is 0.

    Keeps an element when a uniform 16-bit draw is >= round(rate * 2^16) (the rate is exact to
    1e-5) and rescales by the exact inverse keep probability, so E[dropout(x)] = x."""
    if rng is None or rate == 0.0:
        return x
    drop = round(rate * 65536)
    keep = _uniform16(rng, x.shape) >= jnp.uint16(drop)
    return jnp.where(keep, x * jnp.asarray(65536 / (65536 - drop), x.dtype), 0).astype(x.dtype)


def _uniform16(rng: jax.Array, shape: tuple) -> jax.Array:
    """Uniform uint16 draws of `shape`, four per Threefry-2x32 evaluation (both output words, both
    halves of each): a quarter of the hashing of `jax.random.bits`, which spends one evaluation
    per element, and the part of dropout that costs on CPU. Like `jax.random.bits` the result is a
    function of the key and the global shape only, so every sharding of the step draws the same
    mask. Other key types (rbg, ...) fall back to `jax.random.bits`."""
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)   # a raw uint32[2] key
    if shape[-1] % 4 or str(jax.random.key_impl(rng)) != "threefry2x32":
        return jax.random.bits(rng, shape, jnp.uint16)
    k = jax.random.key_data(rng)
    words = shape[:-1] + (shape[-1] // 4,)
    counts = jax.lax.iota(jnp.uint32, math.prod(words)).reshape(words)
    b1, b2 = threefry2x32(k[0], k[1], counts, jnp.zeros_like(counts))
    bits = jax.lax.bitcast_convert_type(jnp.stack([b1, b2], -1), jnp.uint16)   # [..., n/4, 2, 2]
    return bits.reshape(shape)


def threefry2x32(key0, key1, x0, x1):
    """The Threefry-2x32 hash (20 rounds; Salmon et al., 2011), bit for bit jax.random's, written
    out: XLA:CPU runs jax's own lowering as a 5-trip loop, one kernel and a copy of the state per
    trip, where these few lines fuse into a single kernel (for the attention probabilities, the one
    that also applies the mask; for hidden states it writes the bits and the mask reads them)."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (key0, key1, key0 ^ key1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def kernel_order_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                     out_sharding=None):
    """lax.dot_general for a LinearGeneral kernel [in..., out...], whose backward pass writes the
    kernel's gradient in the kernel's own dimension order.

    JAX's transpose rule computes it as dot(dy, x), [out..., in...], then transposes. XLA folds
    that transpose into a 2-D matrix product, but not for the [hidden, 3, heads, head_dim] fused
    query/key/value kernel or the [heads, head_dim, hidden] output one: there the gradient was
    written transposed and every reader of it (the clip, both AdamW moments, the update) paid a
    strided read; writing it in order saves that (see docs/performance.md, "Performance notes")."""
    (lc, rc), (lb, rb) = dimension_numbers
    if lb or rb or tuple(rc) != tuple(range(len(rc))) or precision or preferred_element_type \
            or out_sharding is not None:
        raise NotImplementedError("kernel_order_dot: a kernel [in..., out...] without options")
    return _kernel_order_dot(lhs, rhs, tuple(lc))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kernel_order_dot(x, kernel, axes):
    return jax.lax.dot_general(x, kernel, ((axes, tuple(range(len(axes)))), ((), ())))


def _kernel_order_dot_fwd(x, kernel, axes):
    return _kernel_order_dot(x, kernel, axes), (x, kernel)


def _kernel_order_dot_bwd(axes, residuals, g):
    x, kernel = residuals
    rows = tuple(d for d in range(x.ndim) if d not in axes)   # x's token dims, leading in g
    n_in = len(axes)
    dx = jax.lax.dot_general(g, kernel, ((tuple(range(len(rows), g.ndim)),
                                          tuple(range(n_in, kernel.ndim))), ((), ())))
    dx = dx.transpose(np.argsort(rows + axes))              # [rows..., axes...] -> x's order
    dkernel = jax.lax.dot_general(x, g, ((rows, tuple(range(len(rows)))), ((), ())))
    in_order = np.argsort(np.argsort(axes))                  # x keeps its axes sorted
    dkernel = dkernel.transpose(tuple(in_order) + tuple(range(n_in, kernel.ndim)))
    return dx, dkernel


_kernel_order_dot.defvjp(_kernel_order_dot_fwd, _kernel_order_dot_bwd)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU as in BERT, x * Phi(x), written with erf rather than jax.nn.gelu's erfc:
    XLA's float32 erf is one clamped rational polynomial, its erfc adds an exp and branches."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def attention(q, k, v, mask, implementation=None, *, heads_first_kv=False):
    """q, k, v: [batch, seq, heads, head_dim]; mask: [batch, 1, 1 or seq, seq] bool.

    heads_first_kv: k and v are [batch, heads, keys, head_dim] already (a decoding cache, an
    encoder's memory: stored in the layout the batched products read, so that a decoding step
    does not transpose the whole cache again; always the einsum path).

    On CPU (or implementation='einsum'): explicit scores, float32 softmax and values einsums,
    cheaper there than jax.nn.dot_product_attention's grouped-query vmap. Elsewhere, or for
    'xla'/'cudnn', jax.nn.dot_product_attention (fused kernels on GPU)."""
    if not heads_first_kv and (implementation not in (None, "einsum") or (
            implementation is None and jax.default_backend() != "cpu")):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    # Heads first, so each batched product reads contiguous [seq, head_dim] blocks rather than
    # strided ones from the projection's [batch, seq, heads] layout (see docs/performance.md).
    q = q.transpose(0, 2, 1, 3)
    if not heads_first_kv:
        k, v = (x.transpose(0, 2, 1, 3) for x in (k, v))
    scores = jnp.einsum("bntd,bnsd->bnts", q, k).astype(jnp.float32) * (q.shape[-1] ** -0.5)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bnsd->bntd", probs, v).transpose(0, 2, 1, 3)


def rotary(x: jax.Array, positions: jax.Array | None = None, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (RoFormer; Su et al., 2021) of x: [batch, seq, heads, head_dim].

    Rotates the pairs (x[i], x[i + head_dim/2]) of position p by the angle p * base^(-2i/head_dim),
    so a query-key product depends on the two positions only through their offset: attending to
    "the previous character" is one pattern to learn, not one per position as with a learned table.
    positions: [batch, seq] ints (packed rows restart at 0 per example); default 0, 1, ..."""
    seq, half = x.shape[1], x.shape[-1] // 2
    pos = jnp.arange(seq)[None] if positions is None else positions
    angles = pos[..., None].astype(jnp.float32) * base ** (-jnp.arange(half) / half)
    cos, sin = (f(angles)[:, :, None, :].astype(x.dtype) for f in (jnp.cos, jnp.sin))
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Embeddings(nnx.Module):
    """Token + segment + position embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        emb = lambda n, names: nnx.Embed(n, cfg.hidden_size, dtype=cfg.dtype,
                                         embedding_init=_init(cfg, names), rngs=rngs)
        if cfg.position_embedding not in ("absolute", "rotary"):
            raise ValueError(f"position_embedding={cfg.position_embedding!r}: choose absolute or rotary")
        self.word_embeddings = emb(cfg.vocab_size, ("vocab", "embed"))
        if cfg.position_embedding == "absolute":
            self.position_embeddings = emb(cfg.max_position_embeddings, (None, "embed"))
        self.token_type_embeddings = emb(cfg.type_vocab_size, (None, "embed"))
        self.layer_norm = _layer_norm(cfg, rngs)

    def __call__(self, input_ids, token_type_ids, dropout_rng=None, position_ids=None):
        seq_len = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if self.cfg.position_embedding == "absolute" and position_ids is None:
            x = x + self.position_embeddings.embedding[:seq_len].astype(self.cfg.dtype)[None]
        elif self.cfg.position_embedding == "absolute":   # packed rows: positions per example
            x = x + self.position_embeddings(position_ids)
        return dropout(self.layer_norm(x), self.cfg.dropout_rate, dropout_rng)


class CrossAttention(nnx.Module):
    """A decoder layer's attention to the encoder's output (Vaswani et al., 2017), post-LN like
    the rest of the layer: x = LN(x + Attn(x, encoder keys and values))."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        n, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        proj = lambda out, names: nnx.LinearGeneral(
            cfg.hidden_size, out, dtype=cfg.dtype, dot_general=kernel_order_dot,
            kernel_init=_init(cfg, ("embed", *names)), bias_init=_zeros(names), rngs=rngs)
        self.query = proj((n, d), ("heads", "kv"))
        self.key_value = proj((2, n, d), (None, "heads", "kv"))
        self.output = nnx.LinearGeneral((n, d), cfg.hidden_size, axis=(-2, -1), dtype=cfg.dtype,
                                        dot_general=kernel_order_dot,
                                        kernel_init=_init(cfg, ("heads", "kv", "embed")),
                                        bias_init=_zeros(("embed",)), rngs=rngs)
        self.layer_norm = _layer_norm(cfg, rngs)

    def memory(self, encoded: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The encoder output's keys and values, each [batch, heads, source, head_dim] (heads
        first: see `attention`): computed once per source, then read at every decoding step."""
        k, v = jnp.unstack(self.key_value(encoded), axis=2)
        return k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def __call__(self, x, memory, mask, dropout_rng=None):
        """x: [rows, seq, hidden]; memory: `memory(encoded)` of [batch, ...]; mask: [batch, 1, 1,
        source]. rows may be a multiple g of batch: g consecutive rows share one example's
        memory (beam search's beams), read once for all their queries instead of g times."""
        q = self.query(x)                                          # [rows, seq, heads, head_dim]
        batch = memory[0].shape[0]
        attn = attention(q.reshape(batch, -1, *q.shape[2:]), *memory, mask, heads_first_kv=True)
        attn = attn.reshape(q.shape)
        return self.layer_norm(x + dropout(self.output(attn), self.cfg.dropout_rate, dropout_rng))


def write_cache(cache: dict, k: jax.Array, v: jax.Array):
    """Writes keys and values [batch, seq, heads, head_dim] into a decoding cache at its index;
    returns (all cached keys, all cached values, the advanced cache). The cache is a fixed-size
    {"key", "value": [batch, heads, max_len, head_dim], "index": int32[]}, so every decoding
    step has the same shapes (one compiled step), heads first as `attention` reads them."""
    i = cache["index"]
    k, v = (x.transpose(0, 2, 1, 3).astype(cache["key"].dtype) for x in (k, v))
    key = jax.lax.dynamic_update_slice_in_dim(cache["key"], k, i, 2)
    value = jax.lax.dynamic_update_slice_in_dim(cache["value"], v, i, 2)
    return key, value, {"key": key, "value": value, "index": i + k.shape[2]}


class Layer(nnx.Module):
    """One post-LN Transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)).

    The same layer serves the encoder (BERT), the decoder-only language model (a causal `mask`,
    a key/value `cache` when decoding) and the encoder-decoder's decoder (cross_attention=True:
    x = LN(x + CrossAttn(x, encoder)) between the two), so a BERT checkpoint warm-starts each."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs, cross_attention: bool = False):
        self.cfg = cfg
        n, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        # Fused query/key/value projection: one [hidden, 3, heads, head_dim] matmul instead of three.
        self.qkv = nnx.LinearGeneral(cfg.hidden_size, (3, n, d), dtype=cfg.dtype,
                                     dot_general=kernel_order_dot,
                                     kernel_init=_init(cfg, ("embed", None, "heads", "kv")),
                                     bias_init=_zeros((None, "heads", "kv")), rngs=rngs)
        self.attention_output = nnx.LinearGeneral((n, d), cfg.hidden_size, axis=(-2, -1),
                                                  dtype=cfg.dtype, dot_general=kernel_order_dot,
                                                  kernel_init=_init(cfg, ("heads", "kv", "embed")),
                                                  bias_init=_zeros(("embed",)), rngs=rngs)
        self.attention_layer_norm = _layer_norm(cfg, rngs)
        self.intermediate = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, dtype=cfg.dtype,
                                       kernel_init=_init(cfg, ("embed", "mlp")),
                                       bias_init=_zeros(("mlp",)), rngs=rngs)
        self.output = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, dtype=cfg.dtype,
                                 kernel_init=_init(cfg, ("mlp", "embed")),
                                 bias_init=_zeros(("embed",)), rngs=rngs)
        self.output_layer_norm = _layer_norm(cfg, rngs)
        if cfg.lora_rank or cfg.adalora_rank or cfg.adapter_size:
            from nlp_jax.models.peft import LayerPeft  # pylint: disable=g-import-not-at-top
            self.peft = LayerPeft(cfg, rngs)
        else:
            self.peft = None
        self.cross_attention = CrossAttention(cfg, rngs) if cross_attention else None

    def __call__(self, x, mask, dropout_rng=None, positions=None, *, cache=None, memory=None):
        """x: [batch, seq, hidden]; mask: [batch, 1, 1 or seq, keys] bool (True = may attend);
        positions: [batch, seq] (rotary only; None = 0, 1, ...).

        Decoding: `cache` (see `write_cache`) receives x's keys and values and the queries attend
        to all its max_len slots (`mask` says which); the layer then returns (x, cache).
        Cross-attention: memory = (the encoder's keys, values, mask [batch, 1, 1, source])."""
        if self.peft is not None:
            return self._with_peft(x, mask, dropout_rng, positions, cache, memory)
        rngs = (None,) * 2 if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        q, k, v = jnp.unstack(self.qkv(x), axis=2)                       # each [batch, seq, heads, head_dim]
        attn, cache = self._attend(q, k, v, mask, positions, cache)
        x = self.attention_layer_norm(x + dropout(self.attention_output(attn), self.cfg.dropout_rate, rngs[0]))
        x = self._cross(x, memory, dropout_rng)
        # BERT uses the exact (erf) GELU.
        h = self.output(gelu(self.intermediate(x)))
        x = self.output_layer_norm(x + dropout(h, self.cfg.dropout_rate, rngs[1]))
        return x if cache is None else (x, cache)

    def _attend(self, q, k, v, mask, positions, cache):
        if self.cfg.position_embedding == "rotary":
            q, k = rotary(q, positions), rotary(k, positions)
        if cache is None:
            return attention(q, k, v, mask, self.cfg.attention_impl), None
        k, v, cache = write_cache(cache, k, v)
        return attention(q, k, v, mask, heads_first_kv=True), cache

    def _cross(self, x, memory, dropout_rng):
        if self.cross_attention is None:
            return x
        # A key of its own (folded in), so the encoder layers' dropout draws stay as they were.
        rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, 3)
        k, v, mask = memory
        return self.cross_attention(x, (k, v), mask, rng)

    def _with_peft(self, x, mask, dropout_rng, positions, cache=None, memory=None):
        """The same layer with LoRA updates on its projections and adapters before each residual
        (nlp_jax/models/peft.py); a separate path so that the plain layer stays as it was."""
        peft, rate = self.peft, self.cfg.dropout_rate
        rngs = (None,) * 3 if dropout_rng is None else tuple(jax.random.split(dropout_rng, 3))
        plus = lambda y, d: y if d is None else y + d.reshape(y.shape)
        q, k, v = jnp.unstack(self.qkv(x), axis=2)
        q, k, v = (plus(y, peft.delta(t, x, rngs[2]))
                   for y, t in zip((q, k, v), ("query", "key", "value")))
        attn, cache = self._attend(q, k, v, mask, positions, cache)
        a = plus(self.attention_output(attn),
                 peft.delta("attention_output", attn.reshape(*attn.shape[:2], -1), rngs[2]))
        x = self.attention_layer_norm(x + peft.adapt("attention", dropout(a, rate, rngs[0])))
        x = self._cross(x, memory, dropout_rng)
        i = gelu(plus(self.intermediate(x), peft.delta("intermediate", x, rngs[2])))
        h = plus(self.output(i), peft.delta("output", i, rngs[2]))
        x = self.output_layer_norm(x + peft.adapt("output", dropout(h, rate, rngs[1])))
        return x if cache is None else (x, cache)


class BertEncoder(nnx.Module):
    """Embeddings, the layer stack and the pooler ([CLS] -> dense -> tanh)."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs)
        self.layers = nnx.List([Layer(cfg, rngs) for _ in range(cfg.num_layers)])
        self.pooler = nnx.Linear(cfg.hidden_size, cfg.hidden_size, dtype=cfg.dtype,
                                 kernel_init=_init(cfg, ("embed", "embed_out")),
                                 bias_init=_zeros(("embed_out",)), rngs=rngs)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                 cls_positions=None, *, dropout_rng=None):
        """input_ids, token_type_ids, attention_mask: [batch, seq] ints.

        Packed rows (several examples per row: `packing.pack_features`,
        `pretraining.make_packed_example`) also pass position_ids
        [batch, seq] (restarting at 0 per example) and an attention_mask holding each token's
        example number (1, 2, ...; 0 = padding): a token then attends only within its example.
        cls_positions [batch, k]: where each example's [CLS] is; the pooler then runs at each.

        Returns {'sequence_output': [batch, seq, hidden], 'pooled_output': [batch, hidden], or
        [batch, k, hidden] with cls_positions}.
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        keys = [None] * (self.cfg.num_layers + 1)
        if dropout_rng is not None:
            keys = list(jax.random.split(dropout_rng, self.cfg.num_layers + 1))
        x = self.embeddings(input_ids, token_type_ids, keys[0], position_ids)
        # Keys only: padded queries still attend (to real tokens), so no row is fully masked.
        mask = (attention_mask > 0)[:, None, None, :]
        if position_ids is not None:   # packed: also only within the query's own example
            mask = mask & ((attention_mask[:, None, :, None] == attention_mask[:, None, None, :])
                           | (attention_mask == 0)[:, None, :, None])
        if self.cfg.remat:
            x = _scan_remat(self.layers, x, mask, keys[1:], position_ids)
        else:
            for layer, key in zip(self.layers, keys[1:]):
                x = layer(x, mask, key, position_ids)
        cls = x[:, 0] if cls_positions is None else gather_positions(x, cls_positions)
        pooled = jnp.tanh(self.pooler(cls))
        return {"sequence_output": x, "pooled_output": pooled}


def _scan_remat(layers, x, mask, keys, positions=None):
    """The layer stack as a lax.scan of a jax.checkpoint-ed layer: the backward pass keeps only each
    layer's input and recomputes the rest. Why a scan rather than a checkpoint per layer: XLA:CPU
    drops the optimisation barriers that keep a checkpoint's recomputation apart, merges it back
    with the forward pass and saves every activation anyway, so per-layer checkpoints save almost
    nothing; a loop body cannot be merged that way (figures: docs/performance.md, "Memory"). The
    layers' weights are stacked per call, a copy that is small next to the activations."""
    graphdef = nnx.graphdef(layers[0])
    stacked = jax.tree.map(lambda *w: jnp.stack(w), *[nnx.state(layer) for layer in layers])

    @jax.checkpoint
    def body(h, state_and_key):
        state, key = state_and_key
        return nnx.merge(graphdef, state)(h, mask, key, positions), None

    keys = None if keys[0] is None else jnp.stack(keys)
    return jax.lax.scan(body, x, (stacked, keys))[0]


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x: [batch, seq, hidden], positions: [batch, n] -> [batch, n, hidden]."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


# Sentence-level pretraining tasks: next-sentence prediction (BERT), sentence-order prediction
# (ALBERT), or both, each a binary head on the pooled output.
SENTENCE_TASKS = ("nsp", "sop", "both")


def masked_lm_weights(cfg: BertConfig, rngs: nnx.Rngs, embedding_cfg: BertConfig | None = None):
    """BERT's masked-LM head's own weights, (mlm_transform, mlm_layer_norm, mlm_bias): dense ->
    GELU -> LayerNorm, then the word embeddings (tied; embedding_cfg's width, default cfg's) and
    a bias. Models keep them as three top-level attributes of those names (checkpoint names)."""
    embed = (embedding_cfg or cfg).hidden_size
    transform = nnx.Linear(cfg.hidden_size, embed, dtype=cfg.dtype,
                           kernel_init=_init(cfg, ("embed", "embed_out")),
                           bias_init=_zeros(("embed_out",)), rngs=rngs)
    return (transform, _layer_norm(embedding_cfg or cfg, rngs),
            nnx.Param(jnp.zeros((cfg.vocab_size,)), out_sharding=("vocab",), eager_sharding=False))


def masked_lm_logits(model, word_embeddings: nnx.Embed, x: jax.Array) -> jax.Array:
    """The masked-LM head of `model` (see `masked_lm_weights`) on x [..., hidden] -> float32
    logits [..., vocab]."""
    h = model.mlm_layer_norm(gelu(model.mlm_transform(x)))
    return word_embeddings.attend(h).astype(jnp.float32) + model.mlm_bias[...]


class BertForPreTraining(nnx.Module):
    """BERT with the masked-LM head (tied to the word embeddings) and binary sentence heads on the
    pooled output: `next_sentence` (BERT's NSP) and/or `sentence_order` (ALBERT's SOP), as
    `sentence_task` ("nsp", the default, "sop" or "both") asks."""

    input_keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                  "position_ids", "cls_positions")

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs, *, sentence_task: str = "nsp"):
        if sentence_task not in SENTENCE_TASKS:
            raise ValueError(f"sentence_task={sentence_task!r} is unknown; choose one of "
                             f"{', '.join(SENTENCE_TASKS)}")
        self.cfg = cfg
        self.bert = BertEncoder(cfg, rngs)
        self.mlm_transform, self.mlm_layer_norm, self.mlm_bias = masked_lm_weights(cfg, rngs)
        binary = functools.partial(nnx.Linear, cfg.hidden_size, 2, dtype=cfg.dtype,
                                   kernel_init=_init(cfg, ("embed", None)),
                                   bias_init=_zeros((None,)), rngs=rngs)
        # NSP's head first: an "nsp" model draws exactly the initial values it always did.
        self.next_sentence = binary() if sentence_task in ("nsp", "both") else None
        self.sentence_order = binary() if sentence_task in ("sop", "both") else None

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 masked_lm_positions=None, position_ids=None, cls_positions=None, *,
                 dropout_rng=None):
        """Returns the encoder outputs plus
        'masked_lm_logits' [batch, n_predictions, vocab] (float32; only at masked_lm_positions, the
        ~15% of tokens the loss needs, which saves most of the vocabulary matmul) and, per sentence
        head, 'next_sentence_logits' / 'sentence_order_logits' [batch, 2] (float32), or
        [batch, k, 2] for packed rows (position_ids, cls_positions [batch, k]: see BertEncoder)."""
        out = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cls_positions,
                        dropout_rng=dropout_rng)
        x = out["sequence_output"]
        if masked_lm_positions is not None:
            x = gather_positions(x, masked_lm_positions)
        out["masked_lm_logits"] = masked_lm_logits(self, self.bert.embeddings.word_embeddings, x)
        for name, head in (("next_sentence", self.next_sentence),
                           ("sentence_order", self.sentence_order)):
            if head is not None:
                out[f"{name}_logits"] = head(out["pooled_output"]).astype(jnp.float32)
        return out
