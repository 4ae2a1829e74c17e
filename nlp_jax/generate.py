"""`--mode generate`: one JSON line {"text": ...} per input line, from a language-model workdir
(the continuation of each line, from its latest checkpoint) or a seq2seq workdir (the output for
each source line, from its best checkpoint).

    python run.py --config configs/pretrain_lm.py --workdir runs/lm --mode generate --input prompts.txt
    python run.py --config configs/finetune_seq2seq.py:pinyin --workdir runs/pinyin --mode generate \
        --input sentences.txt --config.generate.method=greedy

How to decode is the command's `config.generate` (so flags can change it); what to decode with is
the workdir's: its config.json, tokenizer and checkpoint, read through Orbax (no code is executed).
"""
from __future__ import annotations

import json
import os

import ml_collections
from flax import nnx

from nlp_jax.data.tokenizer import Tokenizer
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.decoder import Decoder, Seq2Seq
from nlp_jax.predict import read_input_lines, read_json
from nlp_jax.train.checkpoint import Checkpointer, on_one_device
from nlp_jax.train.pretrained import bert_config, load_tokenizer
from nlp_jax.train.recipes.seq2seq import check_generate, generate_texts, generation_settings


def load_generator(workdir: str):
    """(graphdef, params, tokenizer, is_seq2seq, seq2seq info) of a language-model or seq2seq
    workdir."""
    if not os.path.exists(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"--workdir {workdir} holds no run (no config.json); give the "
                                "workdir of a language-model or seq2seq run")
    config = ml_collections.ConfigDict(read_json(workdir, "config.json"))
    recipe = config.get("recipe", "")
    if recipe not in ("lm", "seq2seq"):
        raise ValueError(f"{workdir} is a {recipe or 'pretrain'} workdir; --mode generate needs "
                         "a language model (configs/pretrain_lm.py) or a seq2seq model "
                         "(configs/finetune_seq2seq.py); --mode predict serves the others")
    if recipe == "seq2seq":   # a WordPiece vocabulary too, with a warm start from a BERT
        tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    else:
        tokenizer = Tokenizer.load(config.data.tokenizer_path or os.path.join(workdir, "tokenizer"))
    if recipe == "seq2seq":
        model = lambda: Seq2Seq(BertConfig(**read_json(workdir, "encoder.json")), nnx.Rngs(0))
        directory, info = "best", read_json(workdir, "seq2seq.json")
    else:
        cfg = bert_config(config.model, tokenizer.vocab_size)
        model, directory, info = (lambda: Decoder(cfg, nnx.Rngs(0))), "checkpoints", {}
    graphdef, abstract = nnx.split(nnx.eval_shape(model))
    ckpt = Checkpointer(os.path.join(workdir, directory), read_only=True)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"{workdir}/{directory} holds no checkpoint yet; train first")
        target = on_one_device(nnx.to_pure_dict(abstract))
        params = ckpt.restore(step, {"params": target})[0]["params"]
    finally:
        ckpt.close()
    return graphdef, params, tokenizer, recipe == "seq2seq", info


def generate_lines(workdir: str, lines: list[str], generate_config) -> list[str]:
    """The generated text of each input line (see the module docstring)."""
    check_generate(generate_config)
    graphdef, params, tokenizer, seq2seq, info = load_generator(workdir)
    texts = []
    for i, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            raise ValueError(f"input line {i} is empty: give one prompt or source a line")
        texts.append(text)
    if seq2seq:
        max_len = info["max_source_len"]
        settings = generation_settings(generate_config, info["max_target_len"])
    else:   # the longest prompt decides the (one) compiled prompt length
        max_len = max(len(p) for p in tokenizer.encode_batch(texts)) + 1
        settings = generation_settings(generate_config)
    return generate_texts((graphdef, params), tokenizer, texts, settings, max_len=max_len,
                          seq2seq=seq2seq, batch_size=min(generate_config.batch_size, len(texts)),
                          seed=generate_config.seed)


def generate_main(config, workdir: str, input_path: str | None) -> None:
    """run.py --mode generate: reads `input_path` (or stdin), prints one JSON line per line."""
    lines = read_input_lines(input_path, "one prompt or source a line")
    if "generate" not in config:
        raise ValueError("--mode generate needs a config with a generate block: "
                         "configs/pretrain_lm.py or configs/finetune_seq2seq.py")
    for text in generate_lines(workdir, lines, config.generate):
        print(json.dumps({"text": text}, ensure_ascii=False))
