"""CLUE (Chinese Language Understanding Evaluation) tasks from CLUE's own downloaded files.

`load_clue(name, data_dir, seed)` reads the unzipped `<name>_public` folder of one task:
  "train"  train.json minus a seeded 5% (`sources.seeded_holdout`), for training
  "dev"    that 5%, for model selection
  "test"   CLUE's dev.json: CLUE's test.json has no labels, so CLUE's dev metric (`METRIC`) is
           reported on dev.json, as the CLUE paper and leaderboard baselines do.
`read_unlabeled(name, path)` reads a test.json as (id, example) pairs, and `write_submission`
writes predictions for them as the `SUBMISSION_FILE` CLUE's leaderboard takes.

Files are JSON lines (one object a line, UTF-8), except cmrc2018's SQuAD-format JSON:
  tnews    {"label": "102", "label_desc": "news_entertainment", "sentence", "keywords"}, and
           labels.json lines {"label": "100", "label_desc": "news_story"}
  iflytek  {"label": "11", "label_des": "薅羊毛", "sentence"}, and labels.json lines
           {"label": "0", "label_des": "打车"}
  afqmc    {"sentence1", "sentence2", "label": "0" | "1"}
  ocnli    {"sentence1", "sentence2", "label": "entailment" | "neutral" | "contradiction" | "-",
           ...}; CLUE ships its training file as train.50k.json (train.json is read if present)
  cmnli    as ocnli, in train.json
  csl      {"id", "abst", "keyword": [...], "label": "0" | "1"}
  cluener  {"text", "label": {type: {entity text: [[start, end INCLUSIVE], ...]}}}
  cmrc2018 SQuAD-format train.json / dev.json / test.json
test.json lines carry an "id" and no label.

Examples (the formats of `sources`):
  classification  {"text", "text_b" (None for single sentences), "label": index into label_names}
                  (text/text_b as CLUE's baselines build them; csl: keywords joined by spaces /
                  the abstract)
  cluener         {"chars": list(text), "tags": [index into label_names]} (BIO tags)
  cmrc2018        {"id", "question", "context", "answers": [{"text", "start"}]}
Unlabeled examples have "label" / "tags" None (cmrc2018: "answers" empty).
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
from collections.abc import Sequence

from nlp_jax.data.sources import (
    CLASSIFICATION,
    QUESTION_ANSWERING,
    TOKEN_CLASSIFICATION,
    TaskData,
    _json_records,
    _ner_label_order,
    _require_examples,
    read_squad_json,
    seeded_holdout,
)

_log = logging.getLogger(__name__)

TASKS = ("tnews", "iflytek", "afqmc", "ocnli", "cmnli", "csl", "cluener", "cmrc2018")

# The dev metric CLUE reports (cmrc2018: CLUE reports EM and F1; F1 is the one we select on).
METRIC = {name: "accuracy" for name in TASKS} | {"cluener": "entity_f1", "cmrc2018": "f1"}

# The file names CLUE's leaderboard takes (its submission guide, CLUE 1.1): tnews and ocnli
# carry a version / training-set suffix; the others are <task>_predict.json.
SUBMISSION_FILE = {name: f"{name}_predict.json" for name in TASKS} | {
    "tnews": "tnews11_predict.json",  # test.json of tnews_public is TNEWS 1.1 (tnews10_ for 1.0)
    "ocnli": "ocnli_50k_predict.json",
}

CLUENER_TYPES = ("address", "book", "company", "game", "government", "movie", "name",
                 "organization", "position", "scene")
CLUENER_LABELS = tuple(sorted(["O"] + [f"{p}-{t}" for t in CLUENER_TYPES for p in "BI"],
                              key=_ner_label_order))
NLI_LABELS = ("contradiction", "entailment", "neutral")  # sorted, as CLUE's baselines have them

# (text key, text_b key) of the classification tasks, the fields CLUE's baselines use (tnews: the
# sentence only, not its keywords).
_TEXT_KEYS = {
    "tnews": ("sentence", None),
    "iflytek": ("sentence", None),
    "afqmc": ("sentence1", "sentence2"),
    "ocnli": ("sentence1", "sentence2"),
    "cmnli": ("sentence1", "sentence2"),
    "csl": ("keyword", "abst"),
}
_FIXED_LABELS = {"afqmc": ("0", "1"), "csl": ("0", "1"), "ocnli": NLI_LABELS, "cmnli": NLI_LABELS}
_HOLDOUT_FRACTION = 0.05
_NO_MAJORITY = "-"  # OCNLI / CMNLI label of pairs whose annotators had no majority


def _check_name(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"CLUE task {name!r} is not supported; use one of {', '.join(TASKS)}")


def _file(name: str, data_dir: str, *candidates: str) -> str:
    """The first of `candidates` in `data_dir` that exists."""
    for candidate in candidates:
        path = os.path.join(os.path.expanduser(data_dir), candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(data_dir, candidates[0])} does not exist; unzip CLUE's {name}_public.zip "
        f"and point data_dir at the folder holding {' or '.join(candidates)}"
    )


# ----------------------------------------------------------------------------------------------
# Classification.


def _label_codes(name: str, path: str) -> tuple[str, ...]:
    """The label codes of tnews / iflytek's labels.json, in its order (CLUE's class indices)."""
    codes = []
    for lineno, r in _json_records(path):
        if "label" not in r:
            raise ValueError(f"{path}:{lineno}: needs a \"label\" code, got keys {sorted(r)}; "
                             f"give CLUE's {name} labels.json")
        codes.append(str(r["label"]))
    if len(set(codes)) != len(codes) or not codes:
        raise ValueError(f"{path}: empty or repeated label codes; give CLUE's {name} labels.json")
    return tuple(codes)


def _texts(name: str, r: dict, where: str) -> tuple[str, str | None]:
    keys = [k for k in _TEXT_KEYS[name] if k]
    values = []
    for key in keys:
        value = r.get(key)
        if name == "csl" and key == "keyword" and isinstance(value, list):
            value = " ".join(str(v) for v in value)  # CLUE's baselines: the keywords as text_a
        if not isinstance(value, str):
            raise ValueError(f"{where}: needs a string {key!r} (CLUE's {name} format), got keys "
                             f"{sorted(r)}; is this {name}'s file?")
        values.append(value)
    return values[0], values[1] if len(values) > 1 else None


def _read_classification(name: str, path: str, label_names: Sequence[str]) -> list[dict]:
    label_id = {code: i for i, code in enumerate(label_names)}
    examples, n_no_majority = [], 0
    for lineno, r in _json_records(path):
        where = f"{path}:{lineno}"
        text, text_b = _texts(name, r, where)
        label = str(r.get("label"))
        if label == _NO_MAJORITY and name in ("ocnli", "cmnli"):
            n_no_majority += 1  # skipped, as CLUE's baselines do: there is no gold label
            continue
        if label not in label_id:
            raise ValueError(f"{where}: label {r.get('label')!r} is not one of {name}'s labels "
                             f"{list(label_names)}; fix the line (or labels.json)")
        examples.append({"text": text, "text_b": text_b, "label": label_id[label]})
    if n_no_majority:
        _log.info("%s: skipped %d pairs labeled '-' (no majority label)", path, n_no_majority)
    return examples


# ----------------------------------------------------------------------------------------------
# CLUENER.


def _cluener_text(r: dict, where: str) -> str:
    if not isinstance(r.get("text"), str) or not r["text"]:
        raise ValueError(f"{where}: needs a non-empty string \"text\" (CLUENER's format), got keys "
                         f"{sorted(r)}")
    return r["text"]


def _cluener_tags(r: dict, text: str, where: str) -> tuple[list[str], int]:
    """BIO tags of one labeled CLUENER line, and how many overlapping entities were dropped."""
    label = r.get("label")
    if not isinstance(label, dict):
        raise ValueError(f"{where}: needs \"label\": {{type: {{entity: [[start, end]]}}}}, got "
                         f"{label!r}")
    spans = []
    for etype, entities in label.items():
        if etype not in CLUENER_TYPES:
            raise ValueError(f"{where}: entity type {etype!r} is not one of CLUENER's "
                             f"{list(CLUENER_TYPES)}; fix the line")
        if not isinstance(entities, dict):
            raise ValueError(f"{where}: {etype} needs {{entity: [[start, end]]}}, got "
                             f"{entities!r}; fix the line")
        for entity, positions in entities.items():
            for span in positions if isinstance(positions, list) else [positions]:
                ok = (isinstance(span, list) and len(span) == 2
                      and all(isinstance(x, int) for x in span) and 0 <= span[0] <= span[1])
                if not ok or text[span[0]:span[1] + 1] != entity:
                    # CLUENER's ends are inclusive: text[start:end + 1] is the entity.
                    found = text[span[0]:span[1] + 1] if ok else None
                    raise ValueError(f"{where}: {etype} span {span!r} (end inclusive) holds "
                                     f"{found!r}, not {entity!r}; fix the span")
                spans.append((span[0], span[1] + 1, etype))
    tags, n_dropped = ["O"] * len(text), 0
    for start, end, etype in sorted(spans, key=lambda s: (s[0], s[0] - s[1])):
        if any(t != "O" for t in tags[start:end]):
            n_dropped += 1  # BIO tags cannot nest: the earlier (then longer) entity is kept
            continue
        tags[start:end] = [f"B-{etype}"] + [f"I-{etype}"] * (end - start - 1)
    return tags, n_dropped


def _read_cluener(path: str) -> list[dict]:
    tag_id = {tag: i for i, tag in enumerate(CLUENER_LABELS)}
    examples, n_dropped = [], 0
    for lineno, r in _json_records(path):
        where = f"{path}:{lineno}"
        text = _cluener_text(r, where)
        tags, dropped = _cluener_tags(r, text, where)
        n_dropped += dropped
        examples.append({"chars": list(text), "tags": [tag_id[t] for t in tags]})
    if n_dropped:
        _log.warning("%s: %d entities overlapping an earlier one dropped (BIO tags cannot nest)",
                     path, n_dropped)
    return examples


# ----------------------------------------------------------------------------------------------
# Tasks.


def load_clue(name: str, data_dir: str, seed: int) -> TaskData:
    """CLUE task `name` from `data_dir` (its unzipped <name>_public folder): splits "train" (train
    file minus a seeded 5%), "dev" (that 5%) and "test" (CLUE's dev.json)."""
    _check_name(name)
    train_names = ("train.json", "train.50k.json") if name == "ocnli" else ("train.json",)
    train_path = _file(name, data_dir, *train_names)
    test_path = _file(name, data_dir, "dev.json")
    if name == "cmrc2018":
        kind, label_names = QUESTION_ANSWERING, ()
        read = read_squad_json
    elif name == "cluener":
        kind, label_names = TOKEN_CLASSIFICATION, CLUENER_LABELS
        read = _read_cluener
    else:
        kind = CLASSIFICATION
        label_names = _FIXED_LABELS.get(name) or _label_codes(
            name, _file(name, data_dir, "labels.json"))
        read = functools.partial(_read_classification, name, label_names=label_names)
    train, test = read(train_path), read(test_path)
    _require_examples(train_path, "train", train, f"give CLUE's {name} train file")
    _require_examples(test_path, "test", test, f"give CLUE's {name} dev.json")
    train, dev = seeded_holdout(train, _HOLDOUT_FRACTION, seed)
    _require_examples(train_path, "dev", dev, "one training example is too few to hold out a "
                      "dev split; give CLUE's full train file")
    return TaskData(name, kind, tuple(label_names), {"train": train, "dev": dev, "test": test})


def read_unlabeled(name: str, path: str) -> list[tuple]:
    """CLUE's test.json of task `name` as (id, example) pairs in file order (CLUE scores the
    submission line by line in this order); labels are None. A line without an "id" (older
    files) gets its 0-based line index. cmrc2018: read_squad_json's examples, id = question id."""
    _check_name(name)
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; give CLUE's {name} test.json")
    if name == "cmrc2018":
        return [(e["id"], e) for e in read_squad_json(path)]
    pairs = []
    for index, (lineno, r) in enumerate(_json_records(path)):
        where = f"{path}:{lineno}"
        if name == "cluener":
            example = {"chars": list(_cluener_text(r, where)), "tags": None}
        else:
            text, text_b = _texts(name, r, where)
            example = {"text": text, "text_b": text_b, "label": None}
        pairs.append((r.get("id", index), example))
    return pairs


# ----------------------------------------------------------------------------------------------
# Submissions.


def _label_code(prediction, label_names: Sequence[str], i: int) -> str:
    # A class index (as the model gives) or already a label name (as `predict` writes).
    if isinstance(prediction, str) and prediction in label_names:
        return prediction
    try:
        index = operator.index(prediction)  # Python, NumPy and JAX integers
    except TypeError:
        index = -1
    if not isinstance(prediction, bool) and 0 <= index < len(label_names):
        return label_names[index]
    raise ValueError(f"prediction {i} is {prediction!r}, neither an index into nor one of "
                     f"{list(label_names)}; pass the task's label_names")


def _cluener_label(entities: list[dict], i: int) -> dict:
    """Entities {"type", "start", "end" (exclusive), "text"} -> CLUENER's {type: {text: [[start,
    end inclusive], ...]}}."""
    label: dict = {}
    for e in entities:
        if not all(k in e for k in ("type", "start", "end", "text")):
            raise ValueError(f"prediction {i}: entity {e!r} needs \"type\", \"start\", \"end\" "
                             f"(exclusive) and \"text\", as predict writes them")
        spans = label.setdefault(str(e["type"]), {}).setdefault(str(e["text"]), [])
        spans.append([int(e["start"]), int(e["end"]) - 1])
    return label


def submission(name: str, ids: Sequence, predictions: Sequence, label_names: Sequence[str]):
    """CLUE's submission content for `ids` (read_unlabeled's, in test.json's order):
      classification  [{"id": id, "label": label code/name}] (e.g. "102" for tnews, "entailment"
                      for ocnli), from class indices or label names
      cluener         [{"id": id, "label": {type: {entity text: [[start, end inclusive]]}}}],
                      from lists of entities {"type", "start", "end" (exclusive), "text"}
      cmrc2018        ONE dict {question id: answer text}, from answer texts
    The lists are written one JSON object a line, the cmrc2018 dict as one JSON object
    (`write_submission` does both)."""
    _check_name(name)
    if len(ids) != len(predictions):
        raise ValueError(f"{len(ids)} ids but {len(predictions)} predictions; give one "
                         f"prediction per test example")
    if name == "cmrc2018":
        answers = {str(i): str(p) for i, p in zip(ids, predictions)}
        if len(answers) != len(ids):
            raise ValueError("repeated cmrc2018 question ids; give each question once")
        return answers
    ids = [i.item() if hasattr(i, "item") else i for i in ids]  # NumPy ids -> JSON numbers
    if name == "cluener":
        return [{"id": i, "label": _cluener_label(p, n)}
                for n, (i, p) in enumerate(zip(ids, predictions))]
    return [{"id": i, "label": _label_code(p, label_names, n)}
            for n, (i, p) in enumerate(zip(ids, predictions))]


def write_submission(name: str, ids: Sequence, predictions: Sequence,
                     label_names: Sequence[str], path: str) -> str:
    """Writes `submission(...)` to `path`, or to SUBMISSION_FILE[name] inside `path` where it is
    a folder; returns the file written. UTF-8, Chinese kept as is."""
    content = submission(name, ids, predictions, label_names)
    if os.path.isdir(path):
        path = os.path.join(path, SUBMISSION_FILE[name])
    with open(path, "w", encoding="utf-8") as f:
        if isinstance(content, dict):
            f.write(json.dumps(content, ensure_ascii=False) + "\n")
        else:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in content)
    return path
