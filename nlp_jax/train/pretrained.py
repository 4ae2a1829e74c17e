"""Loading what a run trained: the model and tokenizer of a pretraining workdir.

    model, tokenizer, config = load_workdir("runs/pretrain")   # latest checkpoint, eval mode
    out = model(ids, masked_lm_positions=positions)             # see nlp_jax/models/bert.py
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from nlp_jax.data.tokenizer import Tokenizer
from nlp_jax.models.bert import BertConfig, BertForPreTraining


def bert_config(model_cfg, vocab_size: int) -> BertConfig:
    """BertConfig from `config.model`: a preset size, then any non-zero overrides."""
    overrides = {k: model_cfg[k] for k in ("num_layers", "hidden_size", "num_heads") if model_cfg.get(k)}
    return BertConfig.from_preset(
        model_cfg.size, vocab_size=vocab_size, dropout_rate=model_cfg.dropout_rate,
        max_position_embeddings=model_cfg.max_position_embeddings, dtype=model_cfg.dtype,
        remat=model_cfg.remat, position_embedding=model_cfg.get("position_embedding", "absolute"),
        **overrides)


def load_workdir(workdir: str, step: int | None = None):
    """(model, tokenizer, config) of a pretraining workdir, at its latest (or the given) step.

    Only the parameters are read (not the optimizer state), through Orbax: no code is executed."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{workdir} is not a pretraining workdir (no config.json); "
                                "give the --workdir of a pretraining run")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    tokenizer = Tokenizer.load(config.data.tokenizer_path or os.path.join(workdir, "tokenizer"))
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet; train first")
    model = nnx.eval_shape(lambda: BertForPreTraining(
        bert_config(config.model, tokenizer.vocab_size), nnx.Rngs(0)))
    graphdef, abstract = nnx.split(model)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                     nnx.to_pure_dict(abstract))}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(target, partial_restore=True,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(target))))
    manager.close()
    return nnx.merge(graphdef, restored["state"]["params"]), tokenizer, config
