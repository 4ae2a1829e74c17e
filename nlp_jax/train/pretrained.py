"""The weights a run starts from or a user loads: our pretraining workdirs and Hugging Face BERTs.

    model, tokenizer, config = load_workdir("runs/pretrain")   # latest checkpoint, eval mode
    out = model(ids, masked_lm_positions=positions)             # see nlp_jax/models/bert.py

`load_encoder(config.init_from, config.model)` is what fine-tuning starts from. Both read through
`Checkpointer.restore` (Orbax) or safetensors: loading never executes code from a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
from flax import nnx

from nlp_jax.data.tokenizer import Tokenizer
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.models.bert import PRESETS, BertConfig, BertForPreTraining
from nlp_jax.models.electra import ElectraConfig, ElectraForPreTraining
from nlp_jax.train.checkpoint import Checkpointer, on_one_device

# config.model keys that fix the architecture; with init_from they come from the checkpoint.
ARCHITECTURE_KEYS = ("size", "num_layers", "hidden_size", "num_heads", "max_position_embeddings",
                     "position_embedding")


def bert_config(model_cfg, vocab_size: int) -> BertConfig:
    """BertConfig from `config.model`: a preset size (empty: mini), then any non-zero overrides."""
    overrides = {k: model_cfg[k] for k in ("num_layers", "hidden_size", "num_heads")
                 if model_cfg.get(k)}
    return BertConfig.from_preset(
        model_cfg.size or "mini", vocab_size=vocab_size, dropout_rate=model_cfg.dropout_rate,
        max_position_embeddings=model_cfg.max_position_embeddings or 512, dtype=model_cfg.dtype,
        remat=model_cfg.remat, position_embedding=model_cfg.position_embedding or "absolute",
        **overrides)


def load_tokenizer(path: str):
    """A workdir's (or checkpoint directory's) tokenizer: SentencePiece if spm.model is there,
    else WordPiece (vocab.txt / tokenizer.json)."""
    return (Tokenizer.load(path) if os.path.exists(os.path.join(path, "spm.model"))
            else WordPieceTokenizer.load(path))


def _read_config(workdir: str) -> ml_collections.ConfigDict:
    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


def _pretraining_config(workdir: str):
    """(BertConfig, tokenizer, config) of a pretraining workdir, read without any weights."""
    if not os.path.exists(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"{workdir} is not a pretraining workdir (no config.json); "
                                "give the --workdir of a pretraining run")
    config = _read_config(workdir)
    if config.get("recipe", config.get("task", "pretrain")) != "pretrain":
        raise ValueError(f"{workdir} is a {config.get('recipe', config.get('task'))} workdir, not "
                         "a pretraining one; give the --workdir of a pretraining run or a "
                         "Hugging Face BERT directory")
    tokenizer = Tokenizer.load(config.data.tokenizer_path or os.path.join(workdir, "tokenizer"))
    return bert_config(config.model, tokenizer.vocab_size), tokenizer, config


def _pretraining_parts(workdir: str):
    """(BertConfig, tokenizer, Checkpointer, config) of a pretraining workdir."""
    cfg, tokenizer, config = _pretraining_config(workdir)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    return cfg, tokenizer, ckpt, config


def _restore_params(ckpt: Checkpointer, step: int | None, target: dict, workdir: str) -> dict:
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet; train first")
    try:
        return ckpt.restore(step, {"params": on_one_device(target)})[0]["params"]
    finally:
        ckpt.close()


def load_workdir(workdir: str, step: int | None = None):
    """(model, tokenizer, config) of a pretraining workdir, at its latest (or the given) step.
    Only the parameters are read (not the optimizer state)."""
    cfg, tokenizer, ckpt, config = _pretraining_parts(workdir)
    graphdef, abstract = nnx.split(nnx.eval_shape(
        lambda: pretraining_model(cfg, config, nnx.Rngs(0))))
    params = _restore_params(ckpt, step, nnx.to_pure_dict(abstract), workdir)
    return nnx.merge(graphdef, params), tokenizer, config


def pretraining_model(cfg: BertConfig, config, rngs: nnx.Rngs) -> nnx.Module:
    """The model a pretraining config trains: ELECTRA's generator and discriminator with
    config.model.electra (its `bert` is the discriminator), else BERT with the sentence heads
    data.sentence_task asks for."""
    if config.model.get("electra", False):
        return ElectraForPreTraining(cfg, rngs, ElectraConfig.from_config(config.model))
    return BertForPreTraining(cfg, rngs, sentence_task=config.data.get("sentence_task", "nsp"))


def is_hf_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "config.json")) and any(
        os.path.exists(os.path.join(path, f)) for f in
        ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


@dataclasses.dataclass
class Encoder:
    config: BertConfig
    params: dict            # BertEncoder's parameters (numpy / single device), pure dict
    tokenizer: object
    tokenizer_files: dict   # file name in WORKDIR/tokenizer -> where it is now
    mlm_head: dict | None = None   # with load_encoder(mlm_head=True): BertForPreTraining's masked-LM
                                   # head, {mlm_transform, mlm_layer_norm, mlm_bias} (pure dict)


# The masked-LM head's parameters, by their names in BertForPreTraining (and BertForTasks).
MLM_HEAD_KEYS = ("mlm_transform", "mlm_layer_norm", "mlm_bias")


_TOKENIZER_FILES = ("spm.model", "vocab.txt", "tokenizer.json", "tokenizer_config.json")


def tokenizer_files(path: str) -> dict:
    """A tokenizer's files (a SentencePiece .model file, or a directory holding spm.model or
    WordPiece's vocab.txt / tokenizer.json), by the name they get in WORKDIR/tokenizer."""
    if os.path.isfile(path):
        return {"spm.model": path}
    return {f: os.path.join(path, f) for f in _TOKENIZER_FILES
            if os.path.exists(os.path.join(path, f))}


def _resolve(init_from: str) -> tuple[str, int | None]:
    """A workdir, or one of its checkpoints/<step> -> (workdir, step)."""
    path = init_from.rstrip("/")
    if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
        return os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    return path, None


def encoder_config(init_from: str) -> BertConfig:
    """The architecture stored at `init_from`, read without loading any weights."""
    path, _ = _resolve(init_from)
    if is_hf_dir(path):
        from nlp_jax import hf
        return hf.config_from_hf(path)
    if os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(
            os.path.join(path, "checkpoints")):
        return _pretraining_config(path)[0]
    raise ValueError(f"init_from={init_from!r} is neither a pretraining workdir of ours "
                     "(config.json + checkpoints/) nor a Hugging Face BERT directory "
                     "(config.json + model.safetensors); point it at one of those")


def check_architecture(model_cfg, loaded: BertConfig, init_from: str) -> None:
    """With init_from the architecture is the checkpoint's: a config.model key that sets it must
    be left empty (0 / "") or agree, never be dropped silently."""
    preset = PRESETS.get(model_cfg.get("size") or "")
    wanted = {"num_layers": model_cfg.get("num_layers") or (preset and preset[0]),
              "hidden_size": model_cfg.get("hidden_size") or (preset and preset[1]),
              "num_heads": model_cfg.get("num_heads") or (preset and preset[2]),
              "max_position_embeddings": model_cfg.get("max_position_embeddings"),
              "position_embedding": model_cfg.get("position_embedding")}
    for key, value in wanted.items():
        if value and value != getattr(loaded, key):
            source = f"model.size={model_cfg.size}" if key not in model_cfg or not model_cfg[key] \
                else f"model.{key}={value}"
            raise ValueError(f"{source} disagrees with init_from ({key}={getattr(loaded, key)}); "
                             f"the architecture comes from {init_from}: leave model."
                             f"{'size' if 'size' in source else key} empty")


def check_positions(model_config, length: int, what: str) -> None:
    """A learned position table bounds the input length; rotary positions have no table."""
    table = model_config.max_position_embeddings
    if model_config.position_embedding == "absolute" and length > table:
        raise ValueError(f"{what}={length} exceeds the model's {table} positions "
                         "(model.max_position_embeddings; a pretrained model's is fixed); shorten it")


def check_init_from(config) -> None:
    """With config.init_from, the tokenizer and the architecture are the checkpoint's: a key that
    would set them otherwise is refused in one line."""
    if not config.get("init_from"):
        return
    if config.data.tokenizer_path:
        raise ValueError("data.tokenizer_path is for random initialisation; with init_from the "
                         "tokenizer is the checkpoint's: leave it empty")
    check_architecture(config.model, encoder_config(config.init_from), config.init_from)


def load_encoder(init_from: str, model_cfg, *, mlm_head: bool = False) -> Encoder:
    """The encoder at `init_from` (a pretraining workdir of ours or one of its checkpoints/<step>,
    or a Hugging Face BERT directory), with config.model's dropout_rate, dtype and remat.
    mlm_head=True: also its masked-LM head (prompts score with it), refused in one line where the
    checkpoint has none (e.g. a sentence-transformers model, an ELECTRA discriminator)."""
    path, step = _resolve(init_from)
    keep = dict(dtype=model_cfg.dtype, dropout_rate=model_cfg.dropout_rate, remat=model_cfg.remat)
    if is_hf_dir(path):
        from nlp_jax import hf
        cfg, params, heads = hf.load_bert_params(path)
        head = None
        if mlm_head:
            missing = [k for k in MLM_HEAD_KEYS if k not in (heads or {})]
            if missing:
                raise ValueError(f"{path} has no masked-LM head (cls.predictions.*: no {missing}) "
                                 "and prompts score with it; give a BertForPreTraining or "
                                 "BertForMaskedLM checkpoint, or fine-tune without a prompt")
            head = {k: heads[k] for k in MLM_HEAD_KEYS}
        return Encoder(dataclasses.replace(cfg, **keep), params, WordPieceTokenizer.load(path),
                       tokenizer_files(path), head)
    cfg, tokenizer, ckpt, config = _pretraining_parts(path)
    if mlm_head and config.model.get("electra", False):
        ckpt.close()
        raise ValueError(f"{path} is an ELECTRA run, whose discriminator has no masked-LM head, "
                         "and prompts score with one; give a masked-LM pretraining workdir or "
                         "fine-tune without a prompt")
    abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(
        lambda: BertForPreTraining(cfg, nnx.Rngs(0)))))
    keys = ("bert", *MLM_HEAD_KEYS) if mlm_head else ("bert",)
    params = jax.device_get(_restore_params(ckpt, step, {k: abstract[k] for k in keys}, path))
    head = {k: params[k] for k in MLM_HEAD_KEYS} if mlm_head else None
    return Encoder(dataclasses.replace(cfg, **keep), params["bert"], tokenizer,
                   tokenizer_files(config.data.tokenizer_path or os.path.join(path, "tokenizer")),
                   head)
