"""The decoder-only language model (GPT; Radford et al., 2018) and the encoder-decoder (BERT2BERT;
Rothe et al., 2020), both from BERT's layers (nlp_jax/models/bert.py).

    Decoder(cfg, rngs)                         a language model: causal self-attention, output
                                               tied to the word embeddings
    Seq2Seq(cfg, rngs)                         BertEncoder + Decoder(cross_attention=True)

One layer class serves the three kinds of Transformer, so a BERT checkpoint (ours or Hugging
Face's) warm-starts an encoder-decoder's both halves: only the cross-attention starts afresh.

Decoding (nlp_jax/models/decoding.py) runs the decoder one step at a time over a fixed-size
key/value cache (`Decoder.init_cache`): the queries of a step attend to all max_len slots, and the
mask says which slots hold real tokens at or before them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nlp_jax.models.bert import BertConfig, BertEncoder, Embeddings, Layer, _scan_remat


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """[batch, 1, seq, seq] bool: token t attends to tokens <= t of its own document.

    attention_mask [batch, seq]: each token's document number in a packed row (1, 2, ...;
    0 = padding), or 1 / 0. A padding query attends to itself only, so no row is empty."""
    seq = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((seq, seq), bool))
    same = ((attention_mask[:, :, None] == attention_mask[:, None, :])
            & (attention_mask[:, None, :] > 0))
    return (causal & (same | jnp.eye(seq, dtype=bool)))[:, None]


def cache_mask(attention_mask: jax.Array, index: jax.Array, seq: int) -> jax.Array:
    """[batch, 1, seq, max_len] bool for `seq` new tokens written at cache slots index..: query j
    attends to the real slots (attention_mask [batch, max_len] > 0: prompt padding is 0) at or
    before its own slot, index + j, and always to that slot itself."""
    slots = jnp.arange(attention_mask.shape[1])
    query = index + jnp.arange(seq)
    visible = (slots[None, :] <= query[:, None])[None] & (attention_mask[:, None, :] > 0)
    return (visible | (slots[None, :] == query[:, None])[None])[:, None]


class Decoder(nnx.Module):
    """Embeddings, BERT's layers under a causal mask (with cross-attention to an encoder's output
    when `cross_attention`), and the next-token logits from the tied word embeddings."""

    input_keys = ("input_ids", "attention_mask", "position_ids")

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs, cross_attention: bool = False):
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs)
        self.layers = nnx.List([Layer(cfg, rngs, cross_attention=cross_attention)
                                for _ in range(cfg.num_layers)])

    def __call__(self, input_ids, attention_mask=None, position_ids=None, *, memory=None,
                 cache=None, dropout_rng=None, last_only: bool = False):
        """input_ids: [batch, seq]. attention_mask [batch, seq]: document numbers (packed rows;
        position_ids then restart at 0 per document) or 1 / 0; with `cache`, [batch, max_len]:
        which cache slots are real (the new tokens' included), and position_ids default to the
        slots the new tokens take. memory: `memory(...)` of an encoder's output (Seq2Seq).

        Returns {'logits': [batch, seq, vocab] float32} ([batch, 1, vocab] with last_only: the
        next token's after the last input, all a decoding prefill needs) and, with a cache,
        'cache' (the updated one; see `init_cache`)."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        seq = input_ids.shape[1]
        if cache is None:
            mask = causal_mask(attention_mask)
        else:
            index = cache[0]["index"]
            mask = cache_mask(attention_mask, index, seq)
            if position_ids is None:
                position_ids = jnp.broadcast_to(index + jnp.arange(seq), input_ids.shape)
        keys = [None] * (self.cfg.num_layers + 1)
        if dropout_rng is not None:
            keys = list(jax.random.split(dropout_rng, self.cfg.num_layers + 1))
        x = self.embeddings(input_ids, jnp.zeros_like(input_ids), keys[0], position_ids)
        out = {}
        if cache is None and memory is None and self.cfg.remat:
            x = _scan_remat(self.layers, x, mask, keys[1:], position_ids)
        elif cache is None:
            for i, (layer, key) in enumerate(zip(self.layers, keys[1:])):
                x = layer(x, mask, key, position_ids, memory=None if memory is None else memory[i])
        else:
            new_cache = []
            for i, (layer, key) in enumerate(zip(self.layers, keys[1:])):
                x, c = layer(x, mask, key, position_ids, cache=cache[i],
                             memory=None if memory is None else memory[i])
                new_cache.append(c)
            out["cache"] = new_cache
        if last_only:   # spares the vocabulary product at every other position
            x = x[:, -1:]
        out["logits"] = self.embeddings.word_embeddings.attend(x).astype(jnp.float32)
        return out

    def init_cache(self, batch: int, max_len: int) -> list[dict]:
        """An empty key/value cache of max_len slots per layer (see bert.write_cache)."""
        n = self.cfg.num_heads
        shape = (batch, n, max_len, self.cfg.hidden_size // n)
        return [{"key": jnp.zeros(shape, self.cfg.dtype), "value": jnp.zeros(shape, self.cfg.dtype),
                 "index": jnp.int32(0)} for _ in self.layers]

    def memory(self, encoded: jax.Array, encoder_mask: jax.Array) -> list[tuple]:
        """Per layer, the encoder output's keys, values and mask (encoded [batch, source, hidden],
        encoder_mask [batch, source] 1 / 0): computed once per source, read at every step."""
        mask = (encoder_mask > 0)[:, None, None, :]
        return [(*layer.cross_attention.memory(encoded), mask) for layer in self.layers]


class Seq2Seq(nnx.Module):
    """BERT2BERT: a BERT encoder (`bert`, so our pretraining's or Hugging Face's encoder loads
    unchanged) and a decoder of the same layers with cross-attention (`decoder`), its output tied
    to its own word embeddings. Warm-starting copies the encoder into the decoder too
    (`warm_start_decoder`); the cross-attention starts from random weights."""

    input_keys = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertEncoder(cfg, rngs)
        self.decoder = Decoder(cfg, rngs, cross_attention=True)

    def encode(self, input_ids, attention_mask, dropout_rng=None) -> list[tuple]:
        """The decoder's memory of a source: [batch, source] ids and mask -> per layer (keys,
        values, mask)."""
        encoded = self.bert(input_ids, attention_mask=attention_mask,
                            dropout_rng=dropout_rng)["sequence_output"]
        return self.decoder.memory(encoded, attention_mask)

    def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None,
                 decoder_attention_mask=None, *, dropout_rng=None):
        """Teacher forcing: source [batch, source], target inputs [batch, target] (BOS + target);
        returns {'logits': [batch, target, vocab] float32}."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        keys = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        memory = self.encode(input_ids, attention_mask, keys[0])
        return self.decoder(decoder_input_ids, decoder_attention_mask, memory=memory,
                            dropout_rng=keys[1])


def warm_start_decoder(params: dict, encoder: dict) -> dict:
    """Seq2Seq parameters with the decoder's embeddings and layers (cross-attention aside) set to
    the encoder's: BERT2BERT's warm start (Rothe et al., 2020, "BERT2BERT" without sharing)."""
    decoder = dict(params["decoder"])
    decoder["embeddings"] = encoder["embeddings"]
    decoder["layers"] = {i: {**layer, **{k: v for k, v in encoder["layers"][i].items()}}
                         for i, layer in params["decoder"]["layers"].items()}
    return {**params, "bert": encoder, "decoder": decoder}
