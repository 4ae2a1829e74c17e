"""`--mode predict`: one JSON line per input line, from a fine-tuning workdir's best checkpoint.

    {"label": ..., "score": ...}                               classification, sentence pairs
    {"score": ...}                                             regression (STS-B)
    {"label": ..., "score": ...} for each JSON line {"text", "head", "tail"}: relation extraction
    {"entities": [{"text", "type", "start", "end"}, ...]}      NER (character offsets)

The model is rebuilt from WORKDIR/encoder.json and tasks.json, its parameters read from
WORKDIR/best/ through `Checkpointer.restore`, the tokenizer from WORKDIR/tokenizer.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Iterable

import jax
import numpy as np
from flax import nnx

from nlp_jax.data import bio, encoding, sources
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train.checkpoint import Checkpointer, on_one_device
from nlp_jax.train.pretrained import load_tokenizer
from nlp_jax.train.recipes.finetune import class_probs
from nlp_jax.train.step import model_inputs


def _read(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def load_finetuned(workdir: str):
    """(model, tokenizer, tasks info, max_seq_len) of a fine-tuning workdir, eval mode."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir {workdir} does not exist; give the workdir of a "
                                "fine-tuning run")
    if not os.path.exists(os.path.join(workdir, "tasks.json")):
        kind = "a pretraining workdir" if os.path.isdir(os.path.join(workdir, "checkpoints")) \
            else "not a fine-tuning workdir"
        raise ValueError(f"{workdir} is {kind} (no tasks.json); --mode predict needs the workdir "
                         "of a fine-tuning run")
    best = Checkpointer(os.path.join(workdir, "best"), read_only=True)
    step = best.latest_step()
    if step is None:
        best.close()
        raise FileNotFoundError(f"{workdir} has no trained model (no best/ checkpoint); train "
                                "first")
    task_info = _read(workdir, "tasks.json")
    heads = {n: (i["kind"], len(i["label_names"]), i.get("crf", False))
             for n, i in task_info.items()}
    cfg = BertConfig(**_read(workdir, "encoder.json"))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: BertForTasks(cfg, heads, nnx.Rngs(0))))
    try:
        params = best.restore(step, {"params": on_one_device(nnx.to_pure_dict(abstract))}
                              )[0]["params"]
    finally:
        best.close()
    max_seq_len = _read(workdir, "config.json")["data"]["max_seq_len"]
    return (nnx.merge(graphdef, params), load_tokenizer(os.path.join(workdir, "tokenizer")),
            task_info, max_seq_len)


def predict_lines(workdir: str, lines: Iterable[str], *, batch_size: int = 32,
                  task: str | None = None):
    """Yields one dict per input line (see the module docstring); `task`: which head (default:
    the first task of the run)."""
    model, tokenizer, task_info, max_seq_len = load_finetuned(workdir)
    name = task or next(iter(task_info))
    if name not in task_info:
        raise ValueError(f"task {name!r} is not in {workdir}; choose one of {list(task_info)}")
    kind, names = task_info[name]["kind"], task_info[name]["label_names"]
    forward = jax.jit(lambda batch: class_probs(
        model(**model_inputs(model, batch), task=name), batch))
    texts, examples = [], []
    for i, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            raise ValueError(f"input line {i} is empty: give one text per line")
        texts.append(text)
        if kind == sources.RELATION:   # a JSON object a line: {"text", "head", "tail"}
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"input line {i}: invalid JSON ({e.msg}); give one "
                                 '{"text", "head", "tail"} object a line') from None
            t, head, tail, _ = sources.read_relation(record, f"input line {i}", need_label=False)
            examples.append({"text": t, "head": head, "tail": tail, "label": 0})
        elif kind == sources.TOKEN_CLASSIFICATION:
            examples.append({"chars": list(text), "tags": [0] * len(text)})
        else:
            examples.append({"text": text, "text_b": None, "label": 0})
    task_data = sources.TaskData(name=name, kind=kind, label_names=tuple(names),
                                 splits={"predict": examples})
    feats = encoding.encode_task(task_data, "predict", tokenizer, max_seq_len)
    for start in range(0, len(texts), batch_size):
        sl = slice(start, start + batch_size)
        probs = np.asarray(forward({k: v[sl] for k, v in feats.items() if k != "token_spans"}))
        for j, text in enumerate(texts[sl]):
            if kind == sources.REGRESSION:
                yield {"score": round(float(probs[j]), 6)}
            elif kind != sources.TOKEN_CLASSIFICATION:
                k = int(probs[j].argmax())
                yield {"label": names[k], "score": round(float(probs[j, k]), 6)}
            else:
                real = feats["label_weights"][start + j] > 0
                tags = [names[t] for t in probs[j].argmax(-1)[real]]
                yield {"entities": bio.entities_from_pieces(
                    tags, feats["token_spans"][start + j][real], text)}


def predict_main(workdir: str, input_path: str | None) -> None:
    """run.py --mode predict: reads `input_path` (or stdin), prints JSON lines."""
    if input_path in (None, "", "-"):
        lines = sys.stdin.readlines()
    else:
        if not os.path.isfile(input_path):
            raise FileNotFoundError(f"--input {input_path} does not exist; give a text file, one "
                                    "input a line")
        with open(input_path, encoding="utf-8") as f:
            lines = f.readlines()
    for row in predict_lines(workdir, lines):
        print(json.dumps(row, ensure_ascii=False))

