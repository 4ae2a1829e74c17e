"""Fine-tuning recipe: one encoder, one head per task (classification, sentence pairs,
regression, relation extraction, NER, extractive QA).

- `config.init_from`: a pretraining workdir of ours (or one of its checkpoints/<step>), or a
  Hugging Face BERT directory (safetensors + WordPiece vocabulary); the architecture and the
  tokenizer are then the checkpoint's. Empty: random initialisation with config.model's
  architecture and a tokenizer given (data.tokenizer_path) or trained on the tasks' texts.
- Several tasks train one encoder; each step trains the task drawn by the tasks' `weight`s
  (the draw depends only on seed and step, so resuming replays it).
- The dev split is scored every epoch (or train.eval_every steps): train.best_metric of the first
  task reporting it (or train.best_task) picks the best checkpoint, whose test-split metrics and
  predictions end the run.
- A classification task with `prompt` and `verbalizer` is scored by the masked-LM head at the
  pattern's masks (PET / LM-BFF; `heads.PromptHead`), loaded with the encoder from init_from:
  prompt fine-tuning trains it on the `prompt` loss; train.epochs=0 (with train.num_steps=0)
  trains nothing and scores dev and test with the pretrained weights alone (zero-shot).
- `shots_per_class` / `subset_seed`: the few-shot protocol (`sources.few_shot`).

WORKDIR/encoder.json and tasks.json record what `--mode predict` needs to rebuild the model.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from nlp_jax import losses, metrics as metrics_lib, parallel
from nlp_jax.data import augment, bio, encoding, packing, qa, sources, stream
from nlp_jax.data.tokenizer import load_or_train_tokenizer
from nlp_jax.losses import crf
from nlp_jax.models.heads import PROMPT, BertForTasks
from nlp_jax.models.peft import LORA_TARGETS
from nlp_jax.train import optim, pretrained
from nlp_jax.train.checkpoint import overlay
from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register
from nlp_jax.train.step import model_inputs
from nlp_jax.train.writer import write_json

log = logging.getLogger("nlp_jax")

# Task keys that only one source reads (see configs/finetune_common.py).
_SOURCE_KEYS = {"tfds_name": "tfds", "text_key": "tfds", "text_b_key": "tfds", "label_key": "tfds",
                "train_file": "files", "dev_file": "files", "test_file": "files",
                "label_names": "files", "data_dir": "clue"}
# The dev metrics each kind of task reports (besides per-label ones, "f1/<label>", ...).
# The loss each kind trains on when a task names none.
_DEFAULT_LOSS = {sources.CLASSIFICATION: "classification", sources.RELATION: "classification",
                 sources.REGRESSION: "regression",
                 sources.TOKEN_CLASSIFICATION: "token_classification",
                 sources.QUESTION_ANSWERING: "span"}
_METRICS = {sources.CLASSIFICATION: ("accuracy", "f1_macro", "precision_macro", "recall_macro",
                                     "mcc"),
            sources.REGRESSION: ("pearson", "spearman"),
            sources.RELATION: ("micro_f1", "micro_precision", "micro_recall", "accuracy",
                               "f1_macro"),
            sources.TOKEN_CLASSIFICATION: ("entity_f1", "entity_precision", "entity_recall"),
            sources.QUESTION_ANSWERING: ("f1", "exact_match", "has_answer_f1", "no_answer_f1")}


@register("finetune")
class Finetune(Recipe):
    eval_split, test_split = "dev", "test"

    @staticmethod
    def check_config(config) -> None:
        t, d = config.train, config.data
        if not config.tasks:
            raise ValueError("config.tasks is empty: name at least one task")
        if len(config.tasks) > 1 and t.steps_per_execution > 1:
            raise ValueError(f"train.steps_per_execution={t.steps_per_execution} runs that many "
                             "steps of one task per call, but with several tasks each step draws "
                             "its task: set it to 1")
        if d.max_seq_len < 4:
            raise ValueError(f"data.max_seq_len={d.max_seq_len} leaves no room for text; use at "
                             "least 4")
        if t.get("best_task") and t.best_task not in config.tasks:
            raise ValueError(f"train.best_task={t.best_task!r} is not one of the tasks "
                             f"{list(config.tasks)}")
        for name, task in config.tasks.items():
            for loss in task.get("losses", {}) or {}:
                losses.get(loss)
            if bool(task.get("prompt")) != bool(task.get("verbalizer")):
                raise ValueError(f"tasks.{name}.prompt and tasks.{name}.verbalizer go together: "
                                 "a pattern with [MASK] and one word per label, e.g. "
                                 "prompt=\"{text}总之很[MASK]。\" verbalizer=(\"差\", \"好\")")
            if task.get("prompt") and (d.pack or task.get("crf")):
                raise ValueError(f"tasks.{name}.prompt keeps one example a row with its masks "
                                 "and has no CRF: set data.pack=False and crf=False")
            if task.get("crf") and (d.pack or t.label_smoothing):
                raise ValueError(f"tasks.{name}.crf: a CRF chain cannot cross the examples of "
                                 "a packed row, and its loss has no label smoothing: set "
                                 "data.pack=False and train.label_smoothing=0")
            for key, source in _SOURCE_KEYS.items():   # a key of another source would be ignored
                if task.get(key) and task.get("source", "builtin") != source:
                    raise ValueError(f"tasks.{name}.{key} is set but tasks.{name}.source="
                                     f"{task.get('source', 'builtin')}; it applies to source="
                                     f"{source} only")
        known = {m for kind in _METRICS.values() for m in kind}
        if t.best_metric not in known and "/" not in t.best_metric:
            raise ValueError(f"train.best_metric={t.best_metric!r} is not a dev metric: choose one "
                             f"of {sorted(known)} or a per-label one such as f1/<label>")
        for key in config.get("loss_args", {}) or {}:
            losses.get(key)
        _check_peft(config)
        if d.get("augment", "none") not in ("none", "eda") or \
                d.get("augment_unit", "char") not in augment.UNITS or \
                not 0 <= d.get("augment_prob", 0.1) <= 1:
            raise ValueError(f"data.augment={d.get('augment')!r} (none | eda), data.augment_unit="
                             f"{d.get('augment_unit')!r} (char | word) and data.augment_prob="
                             f"{d.get('augment_prob')} (in [0, 1]): fix the one that is off")
        pretrained.check_init_from(config)

    def __init__(self, config, workdir: str, mesh):
        t, d = config.train, config.data
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.tasks = {name: sources.load_task(cfg) for name, cfg in config.tasks.items()}
        self.crf = {name: bool(cfg.get("crf", False)) for name, cfg in config.tasks.items()}
        _check_tasks(config, self.tasks, self.crf)
        if config.init_from:   # with prompts, the masked-LM head too: it scores them
            self.encoder = pretrained.load_encoder(
                config.init_from, config.model,
                mlm_head=any(cfg.get("prompt") for cfg in config.tasks.values()))
            self.model_config, tokenizer = self.encoder.config, self.encoder.tokenizer
            self.tokenizer_files = self.encoder.tokenizer_files
        else:   # our own tokenizer, given or trained on the tasks' texts
            self.encoder = None
            tokenizer = load_or_train_tokenizer(d, workdir, lambda: _train_texts(self.tasks))
            self.tokenizer_files = pretrained.tokenizer_files(d.tokenizer_path) \
                if d.tokenizer_path else {}
            self.model_config = pretrained.bert_config(config.model, tokenizer.vocab_size)
        self.model_config = _with_peft(self.model_config, config.get("peft"))
        cfg = self.model_config
        pretrained.check_positions(cfg, d.max_seq_len, "data.max_seq_len")
        self.num_layers = cfg.num_layers
        # How each task's answers are read (tasks.json keeps it for --mode predict).
        self.info = {n: _task_info(task, config.tasks[n], self.crf[n])
                     for n, task in self.tasks.items()}
        self.prompts = task_prompts(self.info, tokenizer)
        self.features = {name: {split: encoding.encode_task(
            task, split, tokenizer, d.max_seq_len, doc_stride=d.doc_stride,
            max_query_len=d.max_query_len, prompt=self.prompts.get(name))
            for split in task.splits} for name, task in self.tasks.items()}
        # data.pack: several examples per training row; evaluation stays one example per row, so
        # scores are computed exactly as without packing. Training rows leave the host-only keys.
        train = {n: {k: v for k, v in f["train"].items() if k not in encoding.HOST_KEYS}
                 for n, f in self.features.items()}
        train = {n: packing.pack_features(f, tokenizer.pad_id) if d.pack else f
                 for n, f in train.items()}
        rows = {n: len(f["input_ids"]) for n, f in train.items()}
        self.steps_per_epoch = max(sum(rows.values()) // t.batch_size, 1)
        p, P = jax.process_index(), jax.process_count()
        loss_args = {k: dict(v) for k, v in dict(config.get("loss_args", {}) or {}).items()}
        self.streams = {}
        for n, task in self.tasks.items():
            # By default a task trains on the loss registered under its kind (classification,
            # token_classification); a task's `losses` may weigh in others, e.g. one's own.
            default = "crf" if self.crf[n] else "prompt" if n in self.prompts else \
                _DEFAULT_LOSS[task.kind]
            weights = dict(config.tasks[n].get("losses", {}) or {}) or {default: 1.0}
            smoothing = {} if default in ("crf", "regression", "span") else {
                default: {"label_smoothing": t.label_smoothing}}
            loss_fn = losses.combined_loss(weights, {**smoothing, **loss_args})
            batches = stream.task_batches(train[n], batch_size=t.batch_size, seed=t.seed,
                                          shuffle=True, drop_remainder=True, process_index=p,
                                          process_count=P, num_threads=d.num_threads,
                                          prefetch=d.prefetch,
                                          row_fn=_augmenter(task, tokenizer, d,
                                                            self.prompts.get(n)))
            # Packed rows hold several examples; long examples take several windows.
            per_row = len(task.splits["train"]) / rows[n]
            self.streams[n] = Stream(batches, loss_fn, {"task": n}, {"examples": per_row})
        weights = np.array([config.tasks[n].get("weight", 1.0) for n in self.tasks], np.float64)
        self._draw = weights / weights.sum()
        self.eval_sets = {(n, s): stream.eval_batches(f[s], t.batch_size, p, P)
                          for n, f in self.features.items() for s in f if s != "train"}
        self._predictors = {}
        log.info("fine-tuning %s, %d steps per epoch, batch %d", list(self.tasks),
                 self.steps_per_epoch, t.batch_size)

    def model(self, rngs):
        return BertForTasks(self.model_config, head_specs(self.info, self.prompts), rngs)

    def pick(self, step: int) -> str:
        names = list(self.tasks)
        return names[np.random.default_rng([self.config.train.seed, step]).choice(
            len(names), p=self._draw)]

    def init_params(self, params: dict) -> dict:
        if self.encoder is None:
            return params
        # The encoder, and with prompts the masked-LM head (top-level names, as in pretraining).
        given = {"bert": self.encoder.params, **(self.encoder.mlm_head or {})}
        given = {k: v for k, v in given.items() if k in params}
        _check_shapes(given, jax.eval_shape(lambda: {k: params[k] for k in given}),
                      self.config.init_from)
        # What the checkpoint lacks keeps its fresh values: e.g. a missing pooler, PEFT's weights.
        loaded = overlay({k: params[k] for k in given}, given)
        shardings = jax.tree.map(lambda x: x.sharding, {k: params[k] for k in given})
        return {**params, **jax.device_put(loaded, shardings)}

    def from_base(self, params: dict, trains: dict) -> dict | None:
        """PEFT from init_from: the base's frozen weights stay out of the checkpoints."""
        peft = self.config.get("peft") or {}
        if self.encoder is None or peft.get("method", "none") == "none":
            return None
        return frozen_from_base(params, trains, self.encoder.params)

    def write_files(self) -> None:
        write_model_files(self.workdir, self.tokenizer_files, self.model_config,
                          {"tasks.json": self.info})

    def evaluate(self, split, params, steps) -> Evaluation:
        results, rows, predictions = {}, [], {}
        several = len(self.tasks) > 1
        for n, task in self.tasks.items():
            # The test split brings its siblings along (MNLI's test_mismatched).
            extra = [s for s in task.splits if s.startswith(split + "_")] \
                if split == self.test_split else []
            negative = self.config.tasks[n].get("negative_label", "")
            for s in [split, *extra]:
                scores = predict_scores(self._predictor(n, steps[n]), params,
                                        self.eval_sets[(n, s)], self.mesh)
                report, examples = score_task(task, task.splits[s], self.features[n][s], scores,
                                              self.info[n], negative)
                rows.append({**({"task": n} if several else {}),
                             **({"split": s} if s != split else {}), **report})
                predictions[n if s == split else f"{n}{s[len(split):]}"] = examples
                if s == split:
                    results[n] = (report, examples)
        return Evaluation(rows=rows, score=_best_score(results, self.config.train),
                          predictions=predictions,
                          summary={n: report for n, (report, _) in results.items()})

    def _predictor(self, name, steps):
        if name not in self._predictors:
            self._predictors[name] = predict_fn(steps.graphdef, name, self.tasks[name].kind,
                                                self.mesh, steps.state_shardings["params"])
        return self._predictors[name]


# ------------------------------------------------------------------------------------------
# Evaluation


def head_scores(outputs: dict, batch: dict, kind: str) -> jax.Array:
    """What a task's predictions are read from: class probabilities; with a CRF head, the Viterbi
    path as one-hot rows (its argmax is the decoded tag); a regression head's value as it is; a
    QA head's start and end logits [batch, seq, 2], padding at -1e9."""
    if kind == sources.REGRESSION:
        return outputs["logits"]
    if kind == sources.QUESTION_ANSWERING:
        return jnp.where(batch["attention_mask"][..., None] > 0, outputs["logits"], -1e9)
    if "crf" in outputs:
        tags = crf.viterbi(outputs["logits"], batch["label_weights"] > 0, outputs["crf"])
        return jax.nn.one_hot(tags, outputs["logits"].shape[-1])
    return jax.nn.softmax(outputs["logits"], axis=-1)


def predict_fn(graphdef, task: str, kind: str, mesh, param_sh):
    """Jitted (params, batch) -> `head_scores` of `task`'s head (replicated)."""
    def fn(params, batch):
        model = nnx.merge(graphdef, params)
        return head_scores(model(**model_inputs(model, batch), task=task), batch, kind)
    return jax.jit(fn, in_shardings=(param_sh, parallel.batch_sharding(mesh)),
                   out_shardings=parallel.replicated(mesh))


def predict_scores(predict, params, batches, mesh) -> np.ndarray:
    """`head_scores` for every real row of `batches` (padding rows dropped), in order."""
    out = []
    for b in batches:
        scores = np.asarray(predict(params, parallel.global_batch(
            {k: v for k, v in b.items() if k not in encoding.HOST_KEYS}, mesh)))
        # Rows of all processes come back; keep the real ones (example_weights is global too).
        weights = np.asarray(multihost_utils.process_allgather(
            b["example_weights"], tiled=True)) if jax.process_count() > 1 else b["example_weights"]
        out.append(scores[weights > 0])
    return np.concatenate(out)


def decode(task, examples: list, features: dict, scores: np.ndarray, info: dict) -> list[dict]:
    """One prediction per example (what --mode predict prints) from its rows' `head_scores`:
    {"label", "score"} (classification, relation), {"score"} (regression), {"text", "entities"}
    (NER: each piece from the window that scores it), {"answer", "score", "start"} (QA)."""
    names = task.label_names
    if task.kind == sources.REGRESSION:
        return [{"score": float(p)} for p in scores]
    if task.kind in (sources.CLASSIFICATION, sources.RELATION):
        return [{"label": names[p], "score": float(scores[i, p])}
                for i, p in enumerate(scores.argmax(-1))]
    if task.kind == sources.QUESTION_ANSWERING:
        return qa.answers(examples, features, scores, no_answer=info["no_answer"],
                          max_answer_len=info["max_answer_len"])
    keep = (features["label_weights"] > 0) & (features["max_context"] > 0)
    tags, pieces = scores.argmax(-1), [([], []) for _ in examples]
    for r, i in enumerate(features["example_index"]):
        pieces[i][0].extend(names[t] for t in tags[r][keep[r]])
        pieces[i][1].extend(features["token_spans"][r][keep[r]].tolist())
    out = []
    for e, (piece_tags, spans) in zip(examples, pieces):
        text = "".join(e["chars"])
        out.append({"text": text, "entities": bio.entities_from_pieces(
            piece_tags, np.asarray(spans, np.int32).reshape(-1, 2), text)})
    return out


def score_task(task, examples, features, scores, info: dict, negative_label: str = ""
               ) -> tuple[dict, list[dict]]:
    """Metrics and per-example predictions (with the gold answer) of one task on one split."""
    rows, names = decode(task, examples, features, scores, info), task.label_names
    if task.kind == sources.REGRESSION:
        gold = [e["label"] for e in examples]
        report = metrics_lib.regression_report(gold, scores)
    elif task.kind in (sources.CLASSIFICATION, sources.RELATION):
        gold = [names[e["label"]] for e in examples]
        ids, pred = [e["label"] for e in examples], scores.argmax(-1)
        report = (metrics_lib.relation_report(ids, pred, names, negative_label)
                  if task.kind == sources.RELATION else
                  metrics_lib.classification_report(ids, pred, names))
    elif task.kind == sources.QUESTION_ANSWERING:
        gold = [[a["text"] for a in e["answers"]] for e in examples]
        report = metrics_lib.qa_report([r["answer"] for r in rows], gold,
                                       "zh" if info["chinese"] else "en")
    else:   # scored on characters against the gold annotation, not on the tokenizer's pieces
        gold = [[names[t] for t in e["tags"]] for e in examples]
        report = metrics_lib.entity_report(
            gold, [bio.char_tags(r["entities"], len(r["text"])) for r in rows])
        gold = [None] * len(rows)   # the text and its entities say it
    return report, [{**r, **({"gold": g} if g is not None else {})} for r, g in zip(rows, gold)]


def _best_score(results: dict, t) -> float:
    """train.best_metric of train.best_task (default: the first task that reports that metric)."""
    names = [t.best_task] if t.get("best_task") else list(results)
    for name in names:
        if t.best_metric in results[name][0]:
            return float(results[name][0][t.best_metric])
    raise ValueError(f"train.best_metric={t.best_metric!r} is not reported by {names}; choose one "
                     f"of {sorted(k for k in next(iter(results.values()))[0] if '/' not in k)}")


# ------------------------------------------------------------------------------------------
# Helpers


def _augmenter(task, tokenizer, d, prompt=None):
    """data.augment: each training example's text(s) through EDA at every read, then encoded
    (with a prompt: into its pattern)."""
    if d.get("augment", "none") == "none":
        return None
    examples = task.splits["train"]

    def row(i, rng):
        e = examples[i]
        e = {**e, "text": augment.eda(e["text"], rng, d.augment_prob, d.augment_unit),
             "text_b": None if e["text_b"] is None else
             augment.eda(e["text_b"], rng, d.augment_prob, d.augment_unit)}
        out = encoding.encode_examples(task, "train", [e], tokenizer, d.max_seq_len, prompt)
        return {k: v[0] for k, v in out.items()}
    return row


def _check_peft(config) -> None:
    peft, t = config.get("peft") or {}, config.train
    method = peft.get("method", "none")
    if method not in optim.PEFT_METHODS:
        raise ValueError(f"peft.method={method!r}: choose one of {', '.join(optim.PEFT_METHODS)}")
    if method == "none":
        return
    if t.freeze != "none" or t.freeze_layers:
        raise ValueError(f"peft.method={method} decides what trains; leave train.freeze=none and "
                         "train.freeze_layers=0")
    if method in ("lora", "adalora") and (peft.rank < 1 or not peft.targets):
        raise ValueError(f"peft.method={method} needs peft.rank >= 1 (got {peft.rank}) and some "
                         f"peft.targets of {', '.join(LORA_TARGETS)}")
    if method == "adalora" and not (0 < peft.target_rank <= peft.rank and 0 <= peft.t_init and
                                    0 <= peft.t_final and peft.t_init + peft.t_final < 1):
        raise ValueError(f"peft.method=adalora needs 0 < peft.target_rank <= peft.rank (got "
                         f"{peft.target_rank}, {peft.rank}) and shares peft.t_init + "
                         f"peft.t_final < 1 (got {peft.t_init} + {peft.t_final})")
    if method == "adapter" and peft.adapter_size < 1:
        raise ValueError(f"peft.method=adapter needs peft.adapter_size >= 1 (got "
                         f"{peft.adapter_size})")


def _task_info(task, cfg_task, crf: bool) -> dict:
    """What reading a task's predictions needs, for evaluation and WORKDIR/tasks.json."""
    info = {"kind": task.kind, "label_names": list(task.label_names), "crf": crf}
    if cfg_task.get("source") == "clue":   # --mode predict on test.json writes a submission file
        info["clue"] = task.name
    if cfg_task.get("prompt"):
        info.update(prompt=str(cfg_task.prompt), verbalizer=[str(w) for w in cfg_task.verbalizer])
    if task.kind == sources.QUESTION_ANSWERING:
        info.update(no_answer=any(not e["answers"] for e in task.splits["train"]),
                    chinese=qa.is_chinese(task.splits["train"]),
                    max_answer_len=int(cfg_task.get("max_answer_len", 30)))
    return info


def task_prompts(task_info: dict, tokenizer) -> dict:
    """name -> `encoding.Prompt` of each task with a prompt (from `_task_info`, or tasks.json)."""
    return {n: encoding.make_prompt(i["prompt"], i["verbalizer"], i["label_names"], tokenizer,
                                    f"tasks.{n}")
            for n, i in task_info.items() if i.get("prompt")}


def head_specs(task_info: dict, prompts: dict) -> dict:
    """BertForTasks' `tasks` argument: name -> (kind, labels, crf), or (PROMPT, labels,
    verbalizer piece ids) for a task with a prompt."""
    return {n: (PROMPT, len(i["label_names"]), prompts[n].verbalizer) if n in prompts else
            (i["kind"], len(i["label_names"]), i.get("crf", False))
            for n, i in task_info.items()}


def _check_tasks(config, tasks: dict, crf: dict) -> None:
    """The config checks that need a task's kind, known once its examples are read."""
    t, d = config.train, config.data
    for name, task in tasks.items():
        negative = config.tasks[name].get("negative_label", "")
        if negative and (task.kind != sources.RELATION or negative not in task.label_names):
            raise ValueError(f"tasks.{name}.negative_label={negative!r} must be one of the "
                             f"labels of a relation task; {name} is {task.kind} with labels "
                             f"{list(task.label_names)}")
        if task.kind in (sources.RELATION, sources.QUESTION_ANSWERING) and d.pack:
            raise ValueError(f"data.pack: the {task.kind} task {name} keeps one example a row "
                             "(its positions); set data.pack=False")
        if d.get("augment", "none") != "none" and (
                task.kind not in (sources.CLASSIFICATION, sources.REGRESSION) or d.pack):
            raise ValueError(f"data.augment={d.augment} rewrites texts of classification and "
                             f"regression tasks, unpacked; {name} is {task.kind}"
                             f"{' and data.pack is on' if d.pack else ''}: set data.augment=none"
                             " (entity offsets and tags would no longer match the text)")
        if task.kind in (sources.REGRESSION, sources.QUESTION_ANSWERING) and t.rdrop_alpha:
            raise ValueError(f"train.rdrop_alpha compares class distributions; {name} is "
                             f"{task.kind}: set it to 0")
        if task.kind in (sources.REGRESSION, sources.QUESTION_ANSWERING) and t.label_smoothing:
            raise ValueError(f"train.label_smoothing is for classes; {name} is "
                             f"{task.kind}: set it to 0")
        if config.tasks[name].get("prompt") and task.kind != sources.CLASSIFICATION:
            raise ValueError(f"tasks.{name}.prompt: the masked-LM head scores one word per "
                             f"class, and {name} is {task.kind}; leave prompt empty")
        if crf[name] and task.kind != sources.TOKEN_CLASSIFICATION:
            raise ValueError(f"tasks.{name}.crf is for token classification (NER), and "
                             f"{name} is {task.kind}; leave it False")


def frozen_from_base(params: dict, trains: dict, base: dict) -> dict:
    """True where a parameter does not train and the encoder `base` (its "bert" part) holds it."""
    def walk(p, t, b):
        return {k: walk(v, t[k], b.get(k, {}) if isinstance(b, dict) else {})
                if isinstance(v, dict) else (not t[k]) and isinstance(b, dict) and k in b
                for k, v in p.items()}
    return {k: walk(v, trains[k], base if k == "bert" else {}) if isinstance(v, dict)
            else False for k, v in params.items()}


def _with_peft(model_config, peft) -> pretrained.BertConfig:
    """The encoder's config with the layers' PEFT modules that config.peft asks for."""
    method = (peft or {}).get("method", "none")
    if method == "lora":
        return dataclasses.replace(model_config, lora_rank=peft.rank, lora_alpha=peft.alpha,
                                   lora_dropout=peft.dropout, lora_targets=tuple(peft.targets))
    if method == "adalora":
        return dataclasses.replace(model_config, adalora_rank=peft.rank, lora_alpha=peft.alpha,
                                   lora_dropout=peft.dropout, lora_targets=tuple(peft.targets))
    if method == "adapter":
        return dataclasses.replace(model_config, adapter_size=peft.adapter_size)
    return model_config


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


def write_model_files(workdir: str, tokenizer_files: dict, model_config, info: dict) -> None:
    """What --mode predict / generate and init_from read beside the checkpoints: the tokenizer,
    encoder.json (the model's shape) and the recipe's own JSON files (name -> content)."""
    if jax.process_index() != 0:
        return
    _copy_tokenizer(tokenizer_files, os.path.join(workdir, "tokenizer"))
    write_json(os.path.join(workdir, "encoder.json"), dataclasses.asdict(model_config))
    for name, content in info.items():
        write_json(os.path.join(workdir, name), content)


def _copy_tokenizer(files: dict, target: str) -> None:
    """The tokenizer's files into WORKDIR/tokenizer, so that the workdir predicts on its own."""
    if not files or os.path.exists(target):
        return
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, source in files.items():
        shutil.copy(source, os.path.join(tmp, name))
    os.replace(tmp, target)


def _train_texts(tasks):
    for task in tasks.values():
        for ex in task.splits["train"]:
            if "question" in ex:
                yield from (ex["question"], ex["context"])
            else:
                yield ex["text"] if "text" in ex else "".join(ex["chars"])

