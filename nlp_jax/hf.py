"""Load Hugging Face BERT checkpoints (config.json + model.safetensors + vocab) into our NNX BERT.

Weights are read only through safetensors into numpy: a pickle (pytorch_model.bin) can run code
when loaded, so it is refused, not opened. Names map as follows (torch Linear weights are
[out, in]; ours are [in, out]):

    embeddings.{word,position,token_type}_embeddings  -> embeddings.*.embedding
    encoder.layer.N.attention.self.{query,key,value}  -> layers[N].qkv
                                                         [hidden, 3, heads, head_dim]
    encoder.layer.N.attention.output.dense            -> layers[N].attention_output
                                                         [heads, head_dim, hidden]
    encoder.layer.N.{intermediate,output}.dense       -> layers[N].{intermediate,output}
    *.LayerNorm.{weight,bias} (or gamma/beta)         -> *.layer_norm.{scale,bias}
    pooler.dense                                      -> pooler
    cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias, cls.seq_relationship
                                                      -> BertForPreTraining's heads
"""
from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.models.bert import BertConfig, BertEncoder, BertForPreTraining

_log = logging.getLogger(__name__)

# Buffers, not parameters: recomputed by our model.
_IGNORED_SUFFIXES = (".position_ids", ".token_type_ids")


def config_from_hf(path: str, **overrides) -> BertConfig:
    """Reads `path`/config.json into a BertConfig; refuses what our BERT cannot reproduce."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    checks = [("model_type", "bert"), ("hidden_act", "gelu"),
              ("position_embedding_type", "absolute")]
    for key, supported in checks:
        value = hf.get(key, supported)
        if value != supported:
            raise ValueError(f"{path}: config.json {key}={value!r} is not supported "
                             f"(only {supported!r})")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    absent = [k for k in required if k not in hf]
    if absent:
        raise ValueError(f"{path}: config.json lacks {absent}")
    if hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError(f"{path}: hidden_size {hf['hidden_size']} is not a multiple of "
                         f"num_attention_heads {hf['num_attention_heads']}")
    fields = {
        "vocab_size": hf["vocab_size"], "hidden_size": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"], "num_heads": hf["num_attention_heads"],
        "intermediate_size": hf["intermediate_size"],
        "max_position_embeddings": hf.get("max_position_embeddings", 512),
        "type_vocab_size": hf.get("type_vocab_size", 2),
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "dropout_rate": hf.get("hidden_dropout_prob", 0.1),
        "initializer_range": hf.get("initializer_range", 0.02)}
    fields.update(overrides)
    return BertConfig(**fields)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of `path`/model.safetensors (or its shards) as numpy arrays, by name."""
    from safetensors.numpy import load_file  # imported here: only loading checkpoints needs it

    single = os.path.join(path, "model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(path, s) for s in shards]
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        raise ValueError(
            f"{path}: only pytorch_model.bin, a pickle, which is refused because unpickling can "
            f"run arbitrary code; convert it to model.safetensors (safetensors' convert tool)")
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors")
    tensors = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


class _Reader:
    """Takes tensors by Hugging Face name (the `bert.` prefix optional), checking shapes."""

    def __init__(self, tensors: dict[str, np.ndarray], path: str):
        self.path = path
        self.tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
        self.unused = set(self.tensors)

    def has(self, name: str) -> bool:
        return name in self.tensors or name.replace(".weight", ".gamma") in self.tensors

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
            old = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
            name = next((name.replace(k, v) for k, v in old.items() if name.endswith(k)), name)
        if name not in self.tensors:
            raise ValueError(f"{self.path}: missing tensor {name!r} (expected shape "
                             f"{list(shape)})")
        x = self.tensors[name]
        if x.shape != tuple(shape):
            raise ValueError(f"{self.path}: tensor {name!r} has shape {list(x.shape)}, expected "
                             f"{list(shape)} from config.json")
        self.unused.discard(name)
        return np.asarray(x, dtype=np.float32)

    def linear(self, name: str, n_in: int, n_out: int) -> dict:
        return {"kernel": self(name + ".weight", (n_out, n_in)).T,
                "bias": self(name + ".bias", (n_out,))}

    def layer_norm(self, name: str, n: int) -> dict:
        return {"scale": self(name + ".weight", (n,)), "bias": self(name + ".bias", (n,))}


def _layer_params(take: _Reader, cfg: BertConfig, i: int) -> dict:
    h, n = cfg.hidden_size, cfg.num_heads
    d = h // n
    pre = f"encoder.layer.{i}."
    q, k, v = (take.linear(pre + f"attention.self.{name}", h, h)
               for name in ("query", "key", "value"))
    out = take.linear(pre + "attention.output.dense", h, h)
    # torch's out dimension is heads-major (head * head_dim + j), so reshapes split it exactly.
    return {
        "qkv": {"kernel": np.stack([q["kernel"], k["kernel"], v["kernel"]], 1).reshape(h, 3, n, d),
                "bias": np.stack([q["bias"], k["bias"], v["bias"]]).reshape(3, n, d)},
        "attention_output": {"kernel": out["kernel"].reshape(n, d, h), "bias": out["bias"]},
        "attention_layer_norm": take.layer_norm(pre + "attention.output.LayerNorm", h),
        "intermediate": take.linear(pre + "intermediate.dense", h, cfg.intermediate_size),
        "output": take.linear(pre + "output.dense", cfg.intermediate_size, h),
        "output_layer_norm": take.layer_norm(pre + "output.LayerNorm", h),
    }


def load_bert_params(path: str, **config_overrides) -> tuple[BertConfig, dict, dict | None]:
    """Reads a Hugging Face BERT directory into numpy arrays in our parameter layout.

    Returns (config, params, heads): params is the pure dict of BertEncoder's parameters
    (`nnx.to_pure_dict(nnx.state(encoder, nnx.Param))` layout) without 'pooler' when the
    checkpoint has none; heads is None when the checkpoint has no pretraining heads, else the
    pure dict of those BertForPreTraining heads it has (mlm_transform, mlm_layer_norm, mlm_bias,
    next_sentence). Merge either into a larger model's state with `nnx.replace_by_pure_dict`.
    """
    cfg = config_from_hf(path, **config_overrides)
    take = _Reader(read_safetensors(path), path)
    h = cfg.hidden_size
    emb = lambda name, n: {"embedding": take(f"embeddings.{name}.weight", (n, h))}
    params = {
        "embeddings": {
            "word_embeddings": emb("word_embeddings", cfg.vocab_size),
            "position_embeddings": emb("position_embeddings", cfg.max_position_embeddings),
            "token_type_embeddings": emb("token_type_embeddings", cfg.type_vocab_size),
            "layer_norm": take.layer_norm("embeddings.LayerNorm", h),
        },
        "layers": {i: _layer_params(take, cfg, i) for i in range(cfg.num_layers)},
    }
    if take.has("pooler.dense.weight"):
        params["pooler"] = take.linear("pooler.dense", h, h)

    heads = {}
    if take.has("cls.predictions.transform.dense.weight"):
        heads["mlm_transform"] = take.linear("cls.predictions.transform.dense", h, h)
        heads["mlm_layer_norm"] = take.layer_norm("cls.predictions.transform.LayerNorm", h)
    if take.has("cls.predictions.bias"):
        heads["mlm_bias"] = take("cls.predictions.bias", (cfg.vocab_size,))
    if take.has("cls.seq_relationship.weight"):
        heads["next_sentence"] = take.linear("cls.seq_relationship", h, 2)
    # Our MLM decoder is tied to the word embeddings (as in BERT); an untied copy would be lost.
    if take.has("cls.predictions.decoder.weight"):
        decoder = take("cls.predictions.decoder.weight", (cfg.vocab_size, h))
        if not np.array_equal(decoder, params["embeddings"]["word_embeddings"]["embedding"]):
            _log.warning("%s: cls.predictions.decoder.weight differs from the word embeddings; "
                         "our MLM head is tied to the word embeddings and ignores it", path)
    take.unused.discard("cls.predictions.decoder.bias")  # the same tensor as cls.predictions.bias
    unused = sorted(n for n in take.unused if not n.endswith(_IGNORED_SUFFIXES))
    if unused:
        _log.warning("%s: ignoring %d tensors our BERT has no place for: %s%s", path, len(unused),
                     ", ".join(unused[:5]), " ..." if len(unused) > 5 else "")
    return cfg, params, heads or None


def _fill(abstract, loaded, key: tuple, rng, std: float, missing: list):
    """`loaded` where it has a value, else BERT's initial value (as in models/bert.py: scale 1,
    bias 0, weights truncated normal); keys of the latter are appended to `missing`."""
    if isinstance(abstract, dict):
        loaded = loaded or {}
        return {k: _fill(v, loaded.get(k), key + (k,), rng, std, missing)
                for k, v in abstract.items()}
    if loaded is not None:
        return loaded
    missing.append(key)
    if key[-1] in ("scale", "bias", "mlm_bias"):
        return np.full(abstract.shape, float(key[-1] == "scale"), np.float32)
    x = rng.standard_normal(abstract.shape)
    while (out := np.abs(x) > 2).any():  # resample beyond 2 sigma, as jax's truncated_normal
        x[out] = rng.standard_normal(out.sum())
    return (x * std / 0.87962566103423978).astype(np.float32)  # rescaled to std, as flax does


def load_bert(path: str, *, dtype: str = "float32", seed: int = 0):
    """Loads a Hugging Face BERT directory -> (model, WordPieceTokenizer).

    The model is a BertEncoder, or a BertForPreTraining when the checkpoint has pretraining
    heads; `model(input_ids, token_type_ids=..., attention_mask=...)` ([batch, seq] ints) returns
    {'sequence_output': [batch, seq, hidden], 'pooled_output': [batch, hidden], ...}. It is in
    evaluation mode: our BERT applies dropout only when called with a `dropout_rng`. Parameters
    are float32; `dtype` is the compute dtype. Parameters the checkpoint lacks (often the pooler
    of sentence-transformers models) keep their random initialisation (from `seed`), with a
    warning.
    """
    cfg, params, heads = load_bert_params(path, dtype=dtype)
    cls, loaded = (BertEncoder, params) if heads is None else (BertForPreTraining,
                                                                {"bert": params, **heads})
    # Shapes only: random initial weights would cost seconds of compiling, then be overwritten.
    model = nnx.eval_shape(lambda: cls(cfg, nnx.Rngs(seed)))
    missing = []
    values = _fill(nnx.to_pure_dict(nnx.state(model, nnx.Param)), loaded, (),
                   np.random.default_rng(seed), cfg.initializer_range, missing)
    owners = sorted({".".join(map(str, k[:-1] or k)) for k in missing})  # e.g. "bert.pooler"
    optional = {"pooler", "bert.pooler", "mlm_transform", "mlm_layer_norm", "mlm_bias",
                "next_sentence"}
    if not optional.issuperset(owners):
        raise ValueError(f"{path}: nothing in the checkpoint maps to our parameters {owners}")
    if missing:
        _log.warning("%s: checkpoint has no %s; keeping random initial values (fine-tune them "
                     "before use)", path, ", ".join(owners))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, values))
    nnx.update(model, state)
    model.eval()  # a no-op today (no stateful Dropout), right if one is ever added
    return model, WordPieceTokenizer.load(path)
