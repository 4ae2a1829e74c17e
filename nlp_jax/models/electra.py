"""ELECTRA (Clark et al., 2020): a small generator and the discriminator, trained jointly.

The generator is a small BERT masked LM. Its samples replace the masked tokens, and the
discriminator, a full-size BERT encoder, tells for every token whether it is the original or a
replacement (replaced-token detection, RTD): it learns from all tokens, not from the 15% masked.

    batch (masked as for BERT) -> generator -> logits at masked_lm_positions
                               -> sample (stop-gradient) -> replaced input -> discriminator
                               -> rtd_logits [batch, seq], rtd_labels = sample != original

As in google-research/electra:
  * the generator's width and depth are fractions of the discriminator's (`generator_hidden_size`,
    `generator_layers`); its heads are max(1, width // 64), intermediate size 4 x width;
  * the two share the embeddings (word, position, segment, their LayerNorm). The generator
    projects them to its width (`embeddings_project`) and its masked-LM head projects back to the
    embedding width before scoring against the shared word table;
  * replacements are drawn from softmax(logits / temperature) with no gradient through them (the
    discriminator's loss does not train the generator); `disallow_correct` forbids the original;
  * a label is 1 exactly where the sample differs from the original token, so a sample that happens
    to be the original counts as original.

The discriminator's encoder lives under `bert`: a checkpoint's params["bert"] is the
discriminator, which is what fine-tuning (`init_from`) loads; the generator is thrown away.

Sampling keys: a training call splits `dropout_rng` into the generator's dropout, the sample and
the discriminator's dropout, so a step's sample is a function of the step's key (exact resume).
`sample_rng` overrides the sample's key. Evaluation (`dropout_rng=None`) samples with a fixed key:
held-out figures then see the discriminator on real samples, as ELECTRA evaluates it, and two
evaluations of the same parameters give the same numbers.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from nlp_jax.models.bert import (BertConfig, BertEncoder, Layer, _init, _scan_remat, _zeros,
                                 gather_positions, gelu, masked_lm_logits, masked_lm_weights)

# The key held-out evaluation samples replacements with (dropout_rng=None).
EVAL_SAMPLE_SEED = 0


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
    """The generator's size and the sampling, beside the discriminator's BertConfig."""
    generator_hidden_size: float = 0.25  # generator width / discriminator width (ELECTRA: 1/4-1/2)
    generator_layers: float = 1.0        # generator layers / discriminator layers (ELECTRA: 1)
    temperature: float = 1.0             # replacements ~ softmax(logits / temperature)
    disallow_correct: bool = False       # never sample the original token

    @classmethod
    def from_config(cls, model_cfg) -> "ElectraConfig":
        """From config.model's generator_* keys (configs/pretrain.py)."""
        return cls(generator_hidden_size=float(model_cfg.get("generator_hidden_size", 0.25)),
                   generator_layers=float(model_cfg.get("generator_layers", 1.0)),
                   temperature=float(model_cfg.get("generator_temperature", 1.0)),
                   disallow_correct=bool(model_cfg.get("disallow_correct", False)))


def generator_config(cfg: BertConfig, electra: ElectraConfig) -> BertConfig:
    """The generator's BertConfig: ELECTRA's get_generator_config (width and depth as fractions,
    a head per 64 dimensions) and the largest head count <= that which divides the width."""
    if not (0 < electra.generator_hidden_size <= 1 and 0 < electra.generator_layers <= 1):
        raise ValueError(f"model.generator_hidden_size={electra.generator_hidden_size} and "
                         f"model.generator_layers={electra.generator_layers} must be in (0, 1]: "
                         "fractions of the discriminator's size")
    hidden = max(1, round(cfg.hidden_size * electra.generator_hidden_size))
    heads = max(1, hidden // 64)
    while hidden % heads:
        heads -= 1
    return dataclasses.replace(cfg, hidden_size=hidden, num_heads=heads,
                               intermediate_size=4 * hidden,
                               num_layers=max(1, round(cfg.num_layers * electra.generator_layers)))


def encoder_mask(attention_mask: jax.Array, position_ids: jax.Array | None) -> jax.Array:
    """[batch, 1, seq or 1, seq] bool from a [batch, seq] mask, by BertEncoder's rule: keys that are
    real tokens; packed rows (position_ids given, attention_mask holding each token's example
    number) also only within the query's own example."""
    mask = (attention_mask > 0)[:, None, None, :]
    if position_ids is not None:
        same = attention_mask[:, None, :, None] == attention_mask[:, None, None, :]
        mask = mask & (same | (attention_mask == 0)[:, None, :, None])
    return mask


def replace_positions(ids: jax.Array, positions: jax.Array, values: jax.Array,
                      where: jax.Array) -> jax.Array:
    """ids [batch, seq] with values [batch, n] written at positions [batch, n] where `where`
    [batch, n] is true (the masked_lm_* padding slots are left alone).

    A comparison against every position rather than a scatter: [batch, n, seq] is small, and
    element-wise work shards along the batch like the rest of the step."""
    hit = (positions[:, :, None] == jnp.arange(ids.shape[1])[None, None, :]) & where[:, :, None]
    value = (hit * values[:, :, None].astype(ids.dtype)).sum(1)
    return jnp.where(hit.any(1), value, ids)


def sample_replacements(logits: jax.Array, original_ids: jax.Array, rng: jax.Array,
                        temperature: float = 1.0, disallow_correct: bool = False) -> jax.Array:
    """Tokens drawn from softmax(logits / temperature): logits [batch, n, vocab] -> [batch, n]
    int32. No gradient flows through the draw (as in ELECTRA); `disallow_correct` gives the
    original tokens original_ids [batch, n] probability 0."""
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32)) / temperature
    if disallow_correct:
        logits = jnp.where(jnp.arange(logits.shape[-1]) == original_ids[..., None], -jnp.inf,
                           logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


class Generator(nnx.Module):
    """The small masked LM: the shared embeddings projected to its width, its layers, and a
    masked-LM head back to the embedding width, scored against the shared word table."""

    def __init__(self, cfg: BertConfig, embedding_cfg: BertConfig, rngs: nnx.Rngs):
        """cfg: the generator's own config; embedding_cfg: the discriminator's (its hidden size
        is the embeddings' width)."""
        self.cfg = cfg
        width, embed = cfg.hidden_size, embedding_cfg.hidden_size
        self.embeddings_project = None if width == embed else nnx.Linear(
            embed, width, dtype=cfg.dtype, kernel_init=_init(cfg, ("embed_out", "embed")),
            bias_init=_zeros(("embed",)), rngs=rngs)
        self.layers = nnx.List([Layer(cfg, rngs) for _ in range(cfg.num_layers)])
        self.mlm_transform, self.mlm_layer_norm, self.mlm_bias = masked_lm_weights(
            cfg, rngs, embedding_cfg)

    def __call__(self, embedded, mask, masked_lm_positions, word_embeddings: nnx.Embed,
                 position_ids=None, dropout_rng=None):
        """embedded: [batch, seq, embedding width], the shared embeddings' output; mask: see
        `encoder_mask`. Returns the masked-LM logits [batch, n_predictions, vocab] (float32)."""
        keys = [None] * self.cfg.num_layers
        if dropout_rng is not None:
            keys = list(jax.random.split(dropout_rng, self.cfg.num_layers))
        x = embedded if self.embeddings_project is None else self.embeddings_project(embedded)
        if self.cfg.remat:
            x = _scan_remat(self.layers, x, mask, keys, position_ids)
        else:
            for layer, key in zip(self.layers, keys):
                x = layer(x, mask, key, position_ids)
        return masked_lm_logits(self, word_embeddings, gather_positions(x, masked_lm_positions))


class ElectraForPreTraining(nnx.Module):
    """ELECTRA's generator and discriminator; `bert` is the discriminator's encoder (see the module
    docstring). No sentence-level head: ELECTRA trains none."""

    input_keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                  "masked_lm_ids", "masked_lm_weights", "position_ids", "cls_positions")

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs, electra: ElectraConfig = ElectraConfig()):
        self.cfg, self.electra = cfg, electra
        self.bert = BertEncoder(cfg, rngs)
        self.generator = Generator(generator_config(cfg, electra), cfg, rngs)
        # ELECTRA's discriminator_predictions: dense + activation, then one logit per token.
        self.rtd_transform = nnx.Linear(cfg.hidden_size, cfg.hidden_size, dtype=cfg.dtype,
                                        kernel_init=_init(cfg, ("embed", "embed_out")),
                                        bias_init=_zeros(("embed_out",)), rngs=rngs)
        self.rtd_output = nnx.Linear(cfg.hidden_size, 1, dtype=cfg.dtype,
                                     kernel_init=_init(cfg, ("embed", None)),
                                     bias_init=_zeros((None,)), rngs=rngs)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 masked_lm_positions=None, masked_lm_ids=None, masked_lm_weights=None,
                 position_ids=None, cls_positions=None, *, dropout_rng=None, sample_rng=None):
        """The masked-LM batch (input_ids [batch, seq] with the masked tokens; masked_lm_positions,
        masked_lm_ids (the originals), masked_lm_weights [batch, n]; packed rows as BertEncoder).

        Returns the discriminator's encoder outputs plus
          'generator_logits'  [batch, n, vocab] float32, the generator's masked-LM logits;
          'generator_sample'  [batch, n] int32, the replacements drawn from them;
          'discriminator_input_ids' [batch, seq]: the original text, samples at the masked positions;
          'rtd_logits' [batch, seq] float32 and 'rtd_labels' [batch, seq] int32 (1: replaced)."""
        if masked_lm_positions is None or masked_lm_ids is None:
            raise ValueError("ELECTRA needs masked_lm_positions and masked_lm_ids: give it a "
                             "masked-LM batch (nlp_jax.data.build_pretraining_data)")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        real = (jnp.ones(masked_lm_ids.shape, bool) if masked_lm_weights is None
                else masked_lm_weights > 0)
        if dropout_rng is None:
            embed_key = generator_key = discriminator_key = None
            sample_key = jax.random.key(EVAL_SAMPLE_SEED)
        else:
            embed_key, generator_key, sample_key, discriminator_key = jax.random.split(dropout_rng, 4)
        if sample_rng is not None:
            sample_key = sample_rng

        # Generator: the shared embeddings of the masked input, its own layers and head.
        embedded = self.bert.embeddings(input_ids, token_type_ids, embed_key, position_ids)
        logits = self.generator(embedded, encoder_mask(attention_mask, position_ids),
                                masked_lm_positions, self.bert.embeddings.word_embeddings,
                                position_ids, generator_key)

        # Replacements; the labels compare with the original text (BERT's kept and random-token
        # positions included: the discriminator sees the sample there too, as in ELECTRA).
        sample = sample_replacements(logits, masked_lm_ids, sample_key, self.electra.temperature,
                                     self.electra.disallow_correct)
        original = replace_positions(input_ids, masked_lm_positions, masked_lm_ids, real)
        replaced = replace_positions(input_ids, masked_lm_positions, sample, real)

        out = self.bert(replaced, token_type_ids, attention_mask, position_ids, cls_positions,
                        dropout_rng=discriminator_key)
        h = gelu(self.rtd_transform(out["sequence_output"]))
        out["rtd_logits"] = self.rtd_output(h)[..., 0].astype(jnp.float32)
        out["rtd_labels"] = (replaced != original).astype(jnp.int32)
        out["generator_logits"] = logits
        out["generator_sample"] = sample
        out["discriminator_input_ids"] = replaced
        return out

