"""Fine-tuning, top to bottom: encoder + tokenizer, tasks, model, steps, loop, dev/test, predict.

It reuses the pretraining spine (mesh, jitted sharded steps, Orbax, metrics.jsonl) and adds:

- `config.init_from`: a pretraining workdir of ours (or one of its checkpoints), or a Hugging Face
  BERT directory (safetensors + WordPiece vocabulary); empty: random initialisation;
- one head per task in `config.tasks`; with several tasks, each step trains on one task drawn by
  the tasks' `weight`s (the draw depends only on seed and step, so resuming replays it);
- dev evaluation every epoch (or `train.eval_every` steps), the best checkpoint kept by
  `train.best_metric` on the first task, then the test split scored with that checkpoint and its
  predictions written to WORKDIR/predictions/.

WORKDIR/encoder.json and tasks.json record what `--mode predict` needs to rebuild the model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from nlp_jax import losses, metrics as metrics_lib, parallel
from nlp_jax.data import tasks as tasks_lib
from nlp_jax.data.tokenizer import Tokenizer, load_or_train_tokenizer
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.train import optim
from nlp_jax.train.checkpoint import Checkpointer, check_compatible
from nlp_jax.train.pretrained import bert_config, load_workdir
from nlp_jax.train.step import make_steps, model_inputs
from nlp_jax.train.writer import MetricWriter

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# Initialisation: which encoder weights and which tokenizer


def _is_hf_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "config.json")) and any(
        os.path.exists(os.path.join(path, f)) for f in
        ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def load_encoder(init_from: str, model_cfg, dtype: str, dropout_rate: float):
    """(BertConfig, encoder params or None, tokenizer or None, tokenizer source dir or None)."""
    if not init_from:
        return None, None, None, None
    path = init_from.rstrip("/")
    step = None
    if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
        step, path = int(os.path.basename(path)), os.path.dirname(os.path.dirname(path))
    if _is_hf_dir(path):
        from nlp_jax import hf
        cfg, params, _ = hf.load_bert_params(path)
        cfg = dataclasses.replace(cfg, dtype=dtype, dropout_rate=dropout_rate)
        return cfg, params, WordPieceTokenizer.load(path), path
    if os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(
            os.path.join(path, "checkpoints")):
        model, tokenizer, pre_cfg = load_workdir(path, step)
        cfg = dataclasses.replace(model.cfg, dtype=dtype, dropout_rate=dropout_rate)
        params = jax.device_get(nnx.to_pure_dict(nnx.state(model.bert)))
        return cfg, params, tokenizer, os.path.join(path, "tokenizer")
    raise ValueError(f"init_from={init_from!r} is neither a pretraining workdir of ours "
                     "(config.json + checkpoints/) nor a Hugging Face BERT directory "
                     "(config.json + model.safetensors); point it at one of those")


def _check_shapes(loaded: dict, expected: dict, source: str) -> None:
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    for path, x in jax.tree_util.tree_leaves_with_path(loaded):
        want = flat_expected.get(path)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if want is None:
            raise ValueError(f"{source}: unexpected parameter {name}; is it a BERT checkpoint?")
        if tuple(want.shape) != tuple(np.shape(x)):
            raise ValueError(f"{source}: {name} has shape {tuple(np.shape(x))} but the model "
                             f"expects {tuple(want.shape)}; the checkpoint does not fit the config")


def _save_tokenizer(tokenizer, source_dir, workdir):
    """Copies the tokenizer files into WORKDIR/tokenizer so the workdir predicts on its own."""
    target = os.path.join(workdir, "tokenizer")
    if jax.process_index() != 0 or source_dir is None or os.path.exists(target):
        return
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in ("spm.model", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(source_dir, f)):
            shutil.copy(os.path.join(source_dir, f), tmp)
    os.replace(tmp, target)


def load_tokenizer_dir(path: str):
    return (Tokenizer.load(path) if os.path.exists(os.path.join(path, "spm.model"))
            else WordPieceTokenizer.load(path))


# ------------------------------------------------------------------------------------------
# Evaluation and prediction helpers


def _predict_fn(graphdef, task: str, mesh, param_sh):
    def fn(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(**model_inputs(model, batch), task=task)["logits"]
        return jax.nn.softmax(logits, axis=-1)
    return jax.jit(fn, in_shardings=(param_sh, parallel.batch_sharding(mesh)),
                   out_shardings=parallel.replicated(mesh))


def predict_probs(predict, params, batches, mesh) -> np.ndarray:
    """Class probabilities for every real row of `batches` (padding rows dropped), in order."""
    out = []
    for b in batches:
        probs = np.asarray(predict(params, parallel.global_batch(
            {k: v for k, v in b.items() if k != "token_spans"}, mesh)))
        # Rows of all processes come back; keep the real ones (example_weights is global too).
        weights = np.asarray(multihost_utils.process_allgather(
            b["example_weights"], tiled=True)) if jax.process_count() > 1 else b["example_weights"]
        out.append(probs[weights > 0])
    return np.concatenate(out)


def entities_from_pieces(tags: Sequence[str], spans, text: str) -> list[dict]:
    """Piece-level BIO tags + their character spans -> entities with text, type, start, end."""
    result = []
    for kind, start, end in sorted(metrics_lib.bio_entities(list(tags)), key=lambda e: e[1]):
        s, e = int(spans[start][0]), int(spans[end - 1][1])
        result.append({"text": text[s:e], "type": kind, "start": s, "end": e})
    return result


def char_tags(entities: list[dict], length: int) -> list[str]:
    tags = ["O"] * length
    for ent in entities:
        tags[ent["start"]] = "B-" + ent["type"]
        for i in range(ent["start"] + 1, ent["end"]):
            tags[i] = "I-" + ent["type"]
    return tags


def score_task(task, split_examples, features, probs) -> tuple[dict, list[dict]]:
    """Metrics and per-example predictions of one task on one split."""
    names = task.label_names
    if task.kind == "classification":
        pred = probs.argmax(-1)
        report = metrics_lib.classification_report(features["labels"], pred, names)
        rows = [{"label": names[p], "score": float(probs[i, p]), "gold": names[g]}
                for i, (p, g) in enumerate(zip(pred, features["labels"]))]
        return report, rows
    gold_tags, pred_tags, rows = [], [], []
    for i, ex in enumerate(split_examples):
        text = "".join(ex["chars"])
        real = features["label_weights"][i] > 0
        piece_tags = [names[t] for t in probs[i].argmax(-1)[real]]
        entities = entities_from_pieces(piece_tags, features["token_spans"][i][real], text)
        gold_tags.append([names[t] for t in ex["tags"]])
        pred_tags.append(char_tags(entities, len(text)))
        rows.append({"text": text, "entities": entities})
    # Scored on characters against the gold annotation, not on the tokenizer's pieces.
    return metrics_lib.entity_report(gold_tags, pred_tags), rows


# ------------------------------------------------------------------------------------------
# The run


def _check_config(config) -> None:
    if not config.tasks:
        raise ValueError("config.tasks is empty: name at least one task")
    if config.train.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                         f"{jax.process_count()} processes")


def finetune_and_evaluate(config, workdir: str, *,
                          hooks: Sequence[Callable[[int, dict], None]] = ()) -> dict:
    """Fine-tunes per `config`; returns {task: test metrics of the best dev checkpoint}."""
    # ---------------------------------------------------------------- config & workdir
    _check_config(config)
    os.makedirs(workdir, exist_ok=True)
    config_dict = json.loads(config.to_json_best_effort())
    latest, ckpt = None, None
    if os.path.isdir(os.path.join(workdir, "checkpoints")):  # refuse another run's before anything
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1)
        latest = ckpt.latest_step()
        if latest is not None:
            check_compatible(ckpt.saved_config(latest), config_dict, ckpt.directory)
    t, d = config.train, config.data
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.rules_from_config(config.mesh)

    # ---------------------------------------------------------------- tasks, encoder, tokenizer
    task_data = {name: tasks_lib.load_task(cfg) for name, cfg in config.tasks.items()}
    enc_cfg, enc_params, tokenizer, tok_dir = load_encoder(
        config.init_from, config.model, config.model.dtype, config.model.dropout_rate)
    if tokenizer is None:  # random init: our own tokenizer, given or trained on the tasks' texts
        tokenizer = load_or_train_tokenizer(d, workdir, lambda: _train_texts(task_data))
        tok_dir = None
        if d.tokenizer_path:
            tok_dir = d.tokenizer_path if os.path.isdir(d.tokenizer_path) else os.path.dirname(
                d.tokenizer_path)
        enc_cfg = bert_config(config.model, tokenizer.vocab_size)
    if enc_cfg.position_embedding == "absolute" and d.max_seq_len > enc_cfg.max_position_embeddings:
        raise ValueError(f"data.max_seq_len={d.max_seq_len} exceeds the encoder's "
                         f"{enc_cfg.max_position_embeddings} positions; shorten it")
    features = {name: {split: tasks_lib.encode_task(task, split, tokenizer, d.max_seq_len)
                       for split in ("train", "dev", "test")}
                for name, task in task_data.items()}

    # ---------------------------------------------------------------- model, optimiser, steps
    heads = {n: (k.kind, len(k.label_names)) for n, k in task_data.items()}
    make_model = lambda rngs: BertForTasks(enc_cfg, heads, rngs)
    # data.pack: several examples per training row (tasks.pack_features); evaluation stays one
    # example per row, so scores are computed exactly as without packing.
    train_features = {n: tasks_lib.pack_features(f["train"], tokenizer.pad_id) if d.get("pack")
                      else f["train"] for n, f in features.items()}
    train_sizes = {n: len(f["labels"]) for n, f in train_features.items()}
    examples_per_row = {n: len(features[n]["train"]["labels"]) / train_sizes[n] for n in features}
    steps_per_epoch = max(sum(train_sizes.values()) // t.batch_size, 1)
    num_steps = t.num_steps if t.num_steps > 0 else t.epochs * steps_per_epoch
    t = _with_num_steps(t, num_steps)
    tx = optim.make_optimizer(t, enc_cfg.num_layers)
    losses.import_loss_modules(config.get("loss_modules", ()))
    loss_args = {k: dict(v) for k, v in dict(config.get("loss_args", {}) or {}).items()}

    def task_loss(name, kind):
        # By default a task trains on the loss registered under its kind (classification,
        # token_classification); a task's `losses` may weigh in others, e.g. one's own.
        weights = dict(config.tasks[name].get("losses", {}) or {}) or {kind: 1.0}
        return losses.combined_loss(weights, {kind: {"label_smoothing": t.label_smoothing},
                                              **loss_args})

    steps = {n: make_steps(make_model, tx, task_loss(n, k.kind), mesh, rules, seed=t.seed,
                           schedule=optim.learning_rate_schedule(t), model_kwargs={"task": n})
             for n, k in task_data.items()}
    first = next(iter(steps.values()))
    param_sh = first.state_shardings["params"]
    predictors = {n: _predict_fn(first.graphdef, n, mesh, param_sh) for n in task_data}

    # ---------------------------------------------------------------- data
    p, P = jax.process_index(), jax.process_count()
    train_iters = {n: tasks_lib.task_batches(f, batch_size=t.batch_size, seed=t.seed,
                                             shuffle=True, drop_remainder=True, process_index=p,
                                             process_count=P) for n, f in train_features.items()}
    eval_sets = {(n, s): tasks_lib.eval_batches(f[s], t.batch_size, p, P)
                 for n, f in features.items() for s in ("dev", "test")}

    # ---------------------------------------------------------------- init or restore
    if latest is None:
        state, start = first.init(), 0
        if enc_params is not None:
            _check_shapes(enc_params, jax.eval_shape(lambda: state["params"]["bert"]),
                          config.init_from)
            loaded = {**state["params"]["bert"], **enc_params}  # e.g. a missing pooler stays random
            state["params"]["bert"] = jax.device_put(loaded, param_sh["bert"])
        best_score = -np.inf
    else:
        state, data_state = ckpt.restore(latest, first.abstract_state, config_dict)
        for n, it in train_iters.items():
            it.set_state(data_state["iterators"][n])
        start, best_score = latest, data_state["best_score"]
        log.info("resumed from step %d", start)

    # Written only now that everything loaded and fits: a failed start leaves the workdir as it was.
    ckpt = ckpt or Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1)
    best_ckpt = Checkpointer(os.path.join(workdir, "best"), max_to_keep=1, async_save=False)
    _save_tokenizer(tokenizer, tok_dir, workdir)
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "config.json"), config_dict)
        _write_json(os.path.join(workdir, "encoder.json"), dataclasses.asdict(enc_cfg))
        _write_json(os.path.join(workdir, "tasks.json"), {
            n: {"kind": k.kind, "label_names": list(k.label_names)} for n, k in task_data.items()})

    # ---------------------------------------------------------------- loop
    writer = MetricWriter(workdir, resume_step=start, recomputed_splits=("test",))
    task_names = list(task_data)
    weights = np.array([config.tasks[n].get("weight", 1.0) for n in task_names], np.float64)
    eval_every = t.eval_every if t.eval_every > 0 else steps_per_epoch

    def evaluate(step, split, params):
        results = {}
        for n, task in task_data.items():
            probs = predict_probs(predictors[n], params, eval_sets[(n, split)], mesh)
            report, rows = score_task(task, task.splits[split], features[n][split], probs)
            writer.write(step, split, {"task": n, **report} if len(task_data) > 1 else report)
            results[n] = (report, rows)
        return results

    log.info("fine-tuning %s for %d steps (%d per epoch), batch %d", task_names, num_steps,
             steps_per_epoch, t.batch_size)
    window_start, window_examples = time.perf_counter(), 0.0
    try:
        for step in range(start + 1, num_steps + 1):
            n = task_names[np.random.default_rng([t.seed, step]).choice(len(task_names),
                                                                        p=weights / weights.sum())]
            batch = parallel.global_batch(next(train_iters[n]), mesh)
            state, m = steps[n].train(state, batch)
            window_examples += t.batch_size * examples_per_row[n]   # packed rows hold several
            if step % t.log_every == 0 or step == num_steps:
                m = jax.device_get(m)
                m["examples_per_s"] = window_examples / (time.perf_counter() - window_start)
                writer.write(step, "train", {"task": n, **m} if len(task_names) > 1 else m)
                window_start, window_examples = time.perf_counter(), 0.0
            if step % eval_every == 0 or step == num_steps:
                score = _best_score(evaluate(step, "dev", state["params"]), t)
                if score > best_score:
                    best_score = score
                    best_ckpt.save(step, {"params": state["params"]}, {"score": score}, config_dict)
                log.info("step %d dev %s=%.4f (best %.4f)", step, t.best_metric, score, best_score)
                ckpt.save(step, state, {"iterators": {k: it.get_state() for k, it in
                                                      train_iters.items()},
                                        "best_score": float(best_score)}, config_dict)
            for hook in hooks:
                hook(step, state)
    finally:
        ckpt.wait()
        ckpt.close()

    # ---------------------------------------------------------------- test the best checkpoint
    best_step = best_ckpt.latest_step()
    params = best_ckpt.restore(best_step, {"params": first.abstract_state["params"]},
                               config_dict)[0]["params"]
    best_ckpt.close()
    results = evaluate(best_step, "test", params)
    if jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "predictions"), exist_ok=True)
        for n, (_, rows) in results.items():
            with open(os.path.join(workdir, "predictions", f"{n}_test.jsonl"), "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    writer.close()
    summary = {n: r for n, (r, _) in results.items()}
    log.info("test (best dev step %d): %s", best_step, {n: {k: round(v, 4) for k, v in r.items()
                                                          if "/" not in k}
                                                      for n, r in summary.items()})
    return summary


def _best_score(results: dict, t) -> float:
    """train.best_metric of train.best_task (default: the first task that reports that metric)."""
    names = [t.best_task] if t.get("best_task") else list(results)
    for name in names:
        if t.best_metric in results[name][0]:
            return float(results[name][0][t.best_metric])
    raise ValueError(f"train.best_metric={t.best_metric!r} is not reported by {names}; choose one "
                     f"of {sorted(k for k in next(iter(results.values()))[0] if '/' not in k)}")


def _train_texts(task_data):
    for task in task_data.values():
        for ex in task.splits["train"]:
            yield ex["text"] if "text" in ex else "".join(ex["chars"])


def _with_num_steps(t, num_steps):
    t = t.copy_and_resolve_references()
    with t.unlocked():
        t.num_steps = num_steps
    return t


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# Predict: one JSON line per input line


def predict_lines(workdir: str, lines: Sequence[str], *, batch_size: int = 32, task: str | None = None):
    """Yields one dict per input line: {label, score} (classification) or {entities: [...]}."""
    with open(os.path.join(workdir, "encoder.json")) as f:
        enc_cfg = BertConfig(**json.load(f))
    with open(os.path.join(workdir, "tasks.json")) as f:
        task_info = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
        max_seq_len = json.load(f)["data"]["max_seq_len"]
    name = task or next(iter(task_info))
    info = task_info[name]
    tokenizer = load_tokenizer_dir(os.path.join(workdir, "tokenizer"))
    heads = {n: (i["kind"], len(i["label_names"])) for n, i in task_info.items()}
    abstract = nnx.eval_shape(lambda: BertForTasks(enc_cfg, heads, nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    best = Checkpointer(os.path.join(workdir, "best"), async_save=False)
    step = best.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} has no trained model (no best/ checkpoint); train first")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                     nnx.to_pure_dict(abstract_state))}
    params = best.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]["params"]
    best.close()
    model = nnx.merge(graphdef, params)
    forward = jax.jit(lambda ids, tt, am: jax.nn.softmax(
        model(ids, tt, am, task=name)["logits"], -1))
    texts = []
    for i, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            raise ValueError(f"input line {i} is empty: give one text per line")
        texts.append(text)
    kind, names = info["kind"], info["label_names"]
    task_obj = tasks_lib.TaskData(name=name, kind=kind, label_names=tuple(names), splits={
        "predict": [({"text": t, "text_b": None, "label": 0} if kind == "classification" else
                     {"chars": list(t), "tags": [0] * len(t)}) for t in texts]})
    feats = tasks_lib.encode_task(task_obj, "predict", tokenizer, max_seq_len)
    for start in range(0, len(texts), batch_size):
        sl = slice(start, start + batch_size)
        probs = np.asarray(forward(feats["input_ids"][sl], feats["token_type_ids"][sl],
                                   feats["attention_mask"][sl]))
        for j, text in enumerate(texts[sl]):
            if kind == "classification":
                k = int(probs[j].argmax())
                yield {"label": names[k], "score": round(float(probs[j, k]), 6)}
            else:
                real = feats["label_weights"][start + j] > 0
                tags = [names[t] for t in probs[j].argmax(-1)[real]]
                yield {"entities": entities_from_pieces(tags, feats["token_spans"][start + j][real],
                                                        text)}


def predict_main(workdir: str, input_path: str | None) -> None:
    stream = sys.stdin if input_path in (None, "", "-") else open(input_path, encoding="utf-8")
    with stream:
        lines = stream.readlines()
    for row in predict_lines(workdir, lines):
        print(json.dumps(row, ensure_ascii=False))
