"""`--mode predict`: one JSON line per input line, from a fine-tuning workdir's best checkpoint.

    {"label": ..., "score": ...}                               classification, sentence pairs
                                                               (with a prompt: its label scores'
                                                               softmax; zero-shot workdirs too)
    {"score": ...}                                             regression (STS-B)
    {"label": ..., "score": ...} for each JSON line {"text", "head", "tail"}: relation extraction
    {"entities": [{"text", "type", "start", "end"}, ...]}      NER (character offsets)
    {"answer", "score", "start"} for each JSON line {"question", "context"}: extractive QA
                                                               ("" and -1: no answer)
A CLUE task's workdir given CLUE's test.json (--input) writes the leaderboard's submission file
into the workdir instead (`predict_clue`). `--mode export --output DIR` writes a LoRA / AdaLoRA
workdir's model merged into plain weights (`export_main`).

The model is rebuilt from WORKDIR/encoder.json and tasks.json, its parameters read from
WORKDIR/best/ through `Checkpointer.restore`, the tokenizer from WORKDIR/tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from typing import Iterable

import jax
import ml_collections
import numpy as np
from flax import nnx

from nlp_jax.data import clue, encoding, sources
from nlp_jax.models import peft
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train import optim
from nlp_jax.train.checkpoint import Checkpointer, on_one_device, overlay, subset
from nlp_jax.train.pretrained import load_encoder, load_tokenizer
from nlp_jax.train.recipes.finetune import (decode, frozen_from_base, head_scores, head_specs,
                                            task_prompts)
from nlp_jax.train.step import model_inputs
from nlp_jax.train.writer import write_json


def read_json(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def read_input_lines(input_path: str | None, what: str) -> list[str]:
    """The lines of --input (stdin for none or '-'); `what` says what a line holds."""
    if input_path in (None, "", "-"):
        return sys.stdin.readlines()
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"--input {input_path} does not exist; give a text file, {what}")
    with open(input_path, encoding="utf-8") as f:
        return f.readlines()


def load_finetuned(workdir: str):
    """(model, tokenizer, tasks info, the run's data config) of a fine-tuning workdir, eval mode."""
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
    task_info = read_json(workdir, "tasks.json")
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    heads = head_specs(task_info, task_prompts(task_info, tokenizer))
    cfg = BertConfig(**read_json(workdir, "encoder.json"))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: BertForTasks(cfg, heads, nnx.Rngs(0))))
    abstract = on_one_device(nnx.to_pure_dict(abstract))
    base, from_base = _peft_base(workdir, abstract, cfg.num_layers)
    try:
        target = abstract if from_base is None else \
            subset(abstract, jax.tree.map(lambda b: not b, from_base))
        params = best.restore(step, {"params": target})[0]["params"]
    finally:
        best.close()
    if from_base is not None:   # the rest is the base's, read again from init_from
        params = overlay({**abstract, "bert": overlay(abstract["bert"], base)}, params)
    return (nnx.merge(graphdef, params), tokenizer, task_info,
            read_json(workdir, "config.json")["data"])


def _peft_base(workdir: str, abstract: dict, num_layers: int):
    """(the base encoder's params, which parameters best/ leaves to it) of a workdir fine-tuned
    with a PEFT method from init_from, else (None, None); see `Finetune.from_base`."""
    config = ml_collections.ConfigDict(read_json(workdir, "config.json"))
    method = (config.get("peft") or {}).get("method", "none")
    if method == "none" or not config.get("init_from"):
        return None, None
    try:
        base = jax.device_put(load_encoder(config.init_from, config.model).params)
    except (FileNotFoundError, ValueError) as e:
        raise FileNotFoundError(f"{workdir} holds {method} weights over the base {config.init_from}, "
                                f"which cannot be read now ({e}); restore it there, or export "
                                "a merged workdir (--mode export) while it is there") from None
    trains = optim.trainable_mask(abstract, config.train, num_layers, method)
    return base, frozen_from_base(abstract, trains, base)


def export_main(workdir: str, output: str | None) -> str:
    """run.py --mode export --output DIR: a LoRA or AdaLoRA workdir's best model with the updates
    folded into the base weights (`peft.merge_lora`), written as the workdir of a plain
    fine-tune: --mode predict reads it with the same outputs and no PEFT modules."""
    if not output:
        raise ValueError("--mode export needs --output DIR, a new directory for the merged workdir")
    if os.path.exists(output) and os.listdir(output):
        raise ValueError(f"--output {output} exists and is not empty; give a new directory")
    model, _, task_info, _ = load_finetuned(workdir)
    cfg = model.cfg
    if not (cfg.lora_rank or cfg.adalora_rank) or cfg.adapter_size:
        raise ValueError(f"{workdir} has no LoRA or AdaLoRA updates to merge (adapters add "
                         "layers and cannot be folded in); its workdir is already what predict "
                         "reads")
    params = nnx.to_pure_dict(nnx.state(model))
    params["bert"] = peft.merge_lora(params["bert"], cfg)
    plain = dataclasses.replace(cfg, lora_rank=0, adalora_rank=0, lora_targets=(),
                                lora_dropout=0.0)
    best = Checkpointer(os.path.join(workdir, "best"), read_only=True)
    step, config = best.latest_step(), read_json(workdir, "config.json")
    best.close()
    tmp = output.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(workdir, "tokenizer"), os.path.join(tmp, "tokenizer"))
    config["peft"] = {**config.get("peft", {}), "method": "none"}
    for name, content in (("config.json", config), ("tasks.json", task_info),
                          ("encoder.json", dataclasses.asdict(plain))):
        write_json(os.path.join(tmp, name), content)
    ckpt = Checkpointer(os.path.join(os.path.abspath(tmp), "best"), max_to_keep=1,
                        async_save=False)
    ckpt.save(step, {"params": params}, {"merged_from": os.path.abspath(workdir)}, config)
    ckpt.close()
    os.replace(tmp, output)   # whole or not at all
    return output


def _example(kind: str, text: str, i: int) -> dict:
    """The task example of input line `i` (1-based, for errors); labels are placeholders."""
    if kind in (sources.RELATION, sources.QUESTION_ANSWERING):   # a JSON object a line
        keys = '{"text", "head", "tail"}' if kind == sources.RELATION else '{"question", "context"}'
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"input line {i}: invalid JSON ({e.msg}); give one {keys} object a "
                             "line") from None
        if kind == sources.RELATION:
            t, head, tail, _ = sources.read_relation(record, f"input line {i}", need_label=False)
            return {"text": t, "head": head, "tail": tail, "label": 0}
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k]
                                                   for k in ("question", "context")):
            raise ValueError(f"input line {i}: needs non-empty strings \"question\" and "
                             f"\"context\"; give one {keys} object a line")
        return {"id": str(record.get("id", i)), "question": record["question"],
                "context": record["context"], "answers": []}
    if kind == sources.TOKEN_CLASSIFICATION:
        return {"chars": list(text), "tags": [0] * len(text)}
    return {"text": text, "text_b": None, "label": 0}


def predict_examples(workdir: str, examples: list[dict], *, batch_size: int = 32,
                     task: str | None = None) -> tuple[dict, list[dict]]:
    """(the task's info from tasks.json, one `decode` row per example) with WORKDIR/best's
    model; `task`: which head (default: the first task of the run)."""
    model, tokenizer, task_info, data = load_finetuned(workdir)
    name = task or next(iter(task_info))
    if name not in task_info:
        raise ValueError(f"task {name!r} is not in {workdir}; choose one of {list(task_info)}")
    info = task_info[name]
    forward = jax.jit(lambda batch: head_scores(
        model(**model_inputs(model, batch), task=name), batch, info["kind"]))
    task_data = sources.TaskData(name=name, kind=info["kind"],
                                 label_names=tuple(info["label_names"]),
                                 splits={"predict": examples})
    feats = encoding.encode_task(task_data, "predict", tokenizer, data["max_seq_len"],
                                 doc_stride=data.get("doc_stride", 0),
                                 max_query_len=data.get("max_query_len", 64),
                                 prompt=task_prompts({name: info}, tokenizer).get(name))
    device = {k: v for k, v in feats.items() if k not in encoding.HOST_KEYS}
    n = len(feats["input_ids"])
    scores = np.concatenate([np.asarray(forward({k: v[s:s + batch_size] for k, v in device.items()}))
                             for s in range(0, n, batch_size)])
    return info, decode(task_data, examples, feats, scores, info)


def predict_lines(workdir: str, lines: Iterable[str], *, batch_size: int = 32,
                  task: str | None = None):
    """One dict per input line (see the module docstring)."""
    kind = _task_kind(workdir, task)
    examples = []
    for i, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            raise ValueError(f"input line {i} is empty: give one input a line")
        examples.append(_example(kind, text, i))
    _, rows = predict_examples(workdir, examples, batch_size=batch_size, task=task)
    for row in rows:
        if "score" in row:
            row["score"] = round(float(row["score"]), 6)
        yield row if kind != sources.TOKEN_CLASSIFICATION else {"entities": row["entities"]}


def predict_clue(workdir: str, test_file: str, *, batch_size: int = 32) -> str:
    """CLUE's test.json -> the leaderboard's submission file in `workdir` (returns its path)."""
    info = next(iter(read_json(workdir, "tasks.json").values()))
    name = info["clue"]
    ids, examples = zip(*clue.read_unlabeled(name, test_file))
    # Placeholder labels: the encoders need one, the predictions do not read it.
    examples = [{**e, "label": 0} if "label" in e else
                {**e, "tags": [0] * len(e["chars"])} if "chars" in e else e for e in examples]
    _, rows = predict_examples(workdir, list(examples), batch_size=batch_size)
    key = {sources.TOKEN_CLASSIFICATION: "entities", sources.QUESTION_ANSWERING: "answer"}.get(
        info["kind"], "label")
    return clue.write_submission(name, list(ids), [r[key] for r in rows], info["label_names"],
                                 workdir)


def _task_kind(workdir: str, task: str | None) -> str:
    if not os.path.exists(os.path.join(workdir, "tasks.json")):
        load_finetuned(workdir)   # says what the directory is instead
    info = read_json(workdir, "tasks.json")
    return info.get(task or next(iter(info)), {}).get("kind", "")


def predict_main(workdir: str, input_path: str | None) -> None:
    """run.py --mode predict: reads `input_path` (or stdin), prints JSON lines; a CLUE task's
    workdir with CLUE's test.json writes the submission file instead."""
    tasks = os.path.join(workdir, "tasks.json")
    if input_path not in (None, "", "-") and os.path.isfile(input_path) and os.path.exists(tasks) \
            and "clue" in next(iter(read_json(workdir, "tasks.json").values())):
        print(f"wrote {predict_clue(workdir, input_path)}")
        return
    for row in predict_lines(workdir, read_input_lines(input_path, "one input a line")):
        print(json.dumps(row, ensure_ascii=False))
