"""Linear baselines for the built-in tasks, on the same seeded splits as fine-tuning.

  python scripts/baseline_tfidf.py --task sentiment [--seed 0]
  python scripts/baseline_tfidf.py --task ner [--seed 0] [--max-train-sentences N]

Prints one JSON line with dev and test metrics (computed with nlp_jax.metrics, so they are directly
comparable with the fine-tuning numbers) and what was tuned. Needs scikit-learn (the library itself
does not).

sentiment: character 1-3-gram TF-IDF (sublinear tf), logistic regression; only C is tuned, on dev.
ner:       per-character logistic regression over one-hot features of a +-2 character window
           (unigrams at each offset and the 4 bigrams inside the window), argmax BIO tag per
           character, entity P/R/F1 as seqeval computes them. Trained with SGD (log loss,
           one-vs-rest) on all training sentences by default: lbfgs on 1.5M characters x 1M features
           takes ~1 s an iteration and needs ~60, too slow for a grid in ~3 minutes on 2 cores.
           The L2 strength alpha is tuned on dev.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier

from nlp_jax.data.corpora import ner_splits, sentiment_splits
from nlp_jax.metrics import classification_report, entity_report

SENTIMENT_C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
NER_ALPHA_GRID = (1e-7, 3e-7)  # on dev: 1e-6 gave F1 0.837, 1e-5 0.69


def _rounded(report: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in report.items()}


def run_sentiment(seed: int) -> dict:
    splits = sentiment_splits(seed)
    texts = {name: [t for t, _ in items] for name, items in splits.items()}
    labels = {name: np.array([y for _, y in items]) for name, items in splits.items()}
    # Fitted on train only: dev/test document frequencies must not leak into the features.
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    x = {"train": vectorizer.fit_transform(texts["train"])}
    x.update({name: vectorizer.transform(texts[name]) for name in ("dev", "test")})

    names = ["negative", "positive"]  # label 0, 1
    best, dev_by_c = None, {}
    for c in SENTIMENT_C_GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(x["train"], labels["train"])
        dev = classification_report(labels["dev"], model.predict(x["dev"]), names)
        dev_by_c[c] = round(dev["accuracy"], 4)
        # Select on dev accuracy; ties keep the smaller (more regularised) C.
        if best is None or dev["accuracy"] > best[1]["accuracy"]:
            best = (model, dev, c)
    model, dev, c = best
    test = classification_report(labels["test"], model.predict(x["test"]), names)
    keys = ("accuracy", "f1_macro")
    return {
        "features": "char 1-3-gram tfidf, sublinear_tf (fixed, not tuned)",
        "n_features": len(vectorizer.vocabulary_),
        "C": c, "selected_on": "dev accuracy", "dev_accuracy_by_C": dev_by_c,
        "sizes": {name: len(items) for name, items in splits.items()},
        "dev": _rounded({k: dev[k] for k in keys}),
        "test": _rounded({k: test[k] for k in keys}),
    }


# Window offsets of the unigram features and (left, right) offsets of the bigram features.
_UNIGRAM_OFFSETS = (-2, -1, 0, 1, 2)
_BIGRAM_OFFSETS = ((-2, -1), (-1, 0), (0, 1), (1, 2))
_PAD = 2  # = max |offset|


class _CharWindowFeatures:
    """One-hot window features, built with numpy over all characters of a split at once (a Python
    loop over ~1.5M characters and their feature strings would take longer than the fit).

    Character id 0 is the sentence-boundary padding, 1 an unseen character; bigrams unseen in
    training get no feature. Each template has its own column block, so "X at -1" and "X at +1" are
    different features.
    """

    def __init__(self, train_sentences: list[list[str]]):
        chars = sorted({c for s in train_sentences for c in s})
        self.char_ids = {c: i + 2 for i, c in enumerate(chars)}
        self.n_chars = len(chars) + 2
        ids = self._padded_ids(train_sentences)
        centers = self._centers(train_sentences)
        self.bigram_vocab = [np.unique(self._bigram_keys(ids, centers, l, r))
                             for l, r in _BIGRAM_OFFSETS]
        self.n_features = (len(_UNIGRAM_OFFSETS) * self.n_chars
                           + sum(len(v) for v in self.bigram_vocab))

    def _padded_ids(self, sentences) -> np.ndarray:
        # All sentences in one array, each preceded and followed by _PAD boundary ids, so windows
        # never see a neighbouring sentence.
        parts = []
        for s in sentences:
            parts.extend([0] * _PAD)
            parts.extend(self.char_ids.get(c, 1) for c in s)
        parts.extend([0] * _PAD)
        return np.asarray(parts, np.int64)

    @staticmethod
    def _centers(sentences) -> np.ndarray:
        # Index in the padded array of every real character.
        lengths = np.array([len(s) for s in sentences], np.int64)
        starts = np.cumsum(np.concatenate([[0], lengths[:-1] + _PAD])) + _PAD
        return np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lengths)] or [[]]
                              ).astype(np.int64)

    def _bigram_keys(self, ids, centers, left, right) -> np.ndarray:
        return ids[centers + left] * self.n_chars + ids[centers + right]

    def transform(self, sentences) -> sp.csr_matrix:
        ids, centers = self._padded_ids(sentences), self._centers(sentences)
        columns, offset = [], 0
        for o in _UNIGRAM_OFFSETS:
            columns.append(offset + ids[centers + o])
            offset += self.n_chars
        bigram_columns = []
        for (l, r), vocab in zip(_BIGRAM_OFFSETS, self.bigram_vocab):
            keys = self._bigram_keys(ids, centers, l, r)
            pos = np.minimum(np.searchsorted(vocab, keys), len(vocab) - 1)
            known = vocab[pos] == keys
            bigram_columns.append((np.flatnonzero(known), offset + pos[known]))
            offset += len(vocab)
        rows = [np.arange(len(centers))] * len(columns) + [r for r, _ in bigram_columns]
        cols = columns + [c for _, c in bigram_columns]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                             shape=(len(centers), self.n_features))


def run_ner(seed: int, max_train_sentences: int | None) -> dict:
    splits = ner_splits(seed)
    train = splits["train"]
    if max_train_sentences is not None and max_train_sentences < len(train):
        # The split is already shuffled with `seed`, so a prefix is a random subsample.
        train = train[:max_train_sentences]
    features = _CharWindowFeatures([chars for chars, _ in train])
    tag_names = sorted({t for _, tags in train for t in tags})
    tag_ids = {t: i for i, t in enumerate(tag_names)}
    x_train = features.transform([chars for chars, _ in train])
    y_train = np.array([tag_ids[t] for _, tags in train for t in tags])

    def predict(model, items) -> list[list[str]]:
        flat = model.predict(features.transform([chars for chars, _ in items]))
        out, start = [], 0
        for chars, _ in items:
            out.append([tag_names[i] for i in flat[start:start + len(chars)]])
            start += len(chars)
        return out

    def evaluate(model, items) -> dict[str, float]:
        return entity_report([tags for _, tags in items], predict(model, items))

    best, dev_by_alpha = None, {}
    for alpha in NER_ALPHA_GRID:
        model = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=20, tol=1e-4, random_state=0,
                              n_jobs=2).fit(x_train, y_train)
        dev = evaluate(model, splits["dev"])
        dev_by_alpha[alpha] = round(dev["entity_f1"], 4)
        if best is None or dev["entity_f1"] > best[1]["entity_f1"]:
            best = (model, dev, alpha)
    model, dev, alpha = best
    test = evaluate(model, splits["test"])
    keys = ("entity_precision", "entity_recall", "entity_f1", "f1/PER", "f1/LOC", "f1/ORG")
    return {
        "features": "one-hot char window +-2: 5 unigrams + 4 bigrams (train vocab)",
        "model": "logistic regression (SGD, log loss, one-vs-rest)",
        "n_features": features.n_features,
        "alpha": alpha, "selected_on": "dev entity_f1", "dev_entity_f1_by_alpha": dev_by_alpha,
        "train_sentences": f"{len(train)} of {len(splits['train'])}"
                           + (" (subsampled)" if len(train) < len(splits["train"]) else ""),
        "train_characters": int(x_train.shape[0]),
        "dev": _rounded({k: dev[k] for k in keys}),
        "test": _rounded({k: test[k] for k in keys}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("sentiment", "ner"), required=True)
    parser.add_argument("--seed", type=int, default=0, help="split seed (fine-tuning default: 0)")
    parser.add_argument("--max-train-sentences", type=int, default=None,
                        help="ner only: train on the first N (shuffled) training sentences")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.task == "sentiment":
        result = run_sentiment(args.seed)
    else:
        result = run_ner(args.seed, args.max_train_sentences)
    result = {"task": args.task, "seed": args.seed, **result,
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
