"""Evaluation metrics for the fine-tuning tasks, in plain numpy.

No scikit-learn or seqeval: they are heavy, optional dependencies and the training loop only needs a
few numbers. The definitions follow them exactly, so results are comparable with published ones:

  classification_report  sklearn's precision_recall_fscore_support(labels=range(n), zero_division=0)
                         plus accuracy; macro = unweighted mean over *all* named classes; and
                         Matthews' correlation (sklearn's matthews_corrcoef, multiclass R_K)
  relation_report        classification_report plus micro precision/recall/F1 over every label
                         but the negative one (TACRED's scorer: "no_relation" is not a relation)
  regression_report      Pearson and Spearman correlation (scipy's pearsonr, spearmanr with
                         average ranks for ties) and the mean squared error
  entity_report          seqeval's micro precision/recall/F1 over exact (type, start, end) matches,
                         and the same per entity type, of entities chunked by
                         `nlp_jax.data.bio.bio_entities` (seqeval's default, "conlleval", mode).

Every value is a Python float (JSON- and TensorBoard-friendly); 0/0 is 0.0 (sklearn's
zero_division=0, seqeval's default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlp_jax.data.bio import bio_entities


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(precision: float, recall: float) -> float:
    # Harmonic mean; 0 when both are 0, matching sklearn/seqeval with zero_division=0.
    return _div(2.0 * precision * recall, precision + recall)


def classification_report(y_true, y_pred, label_names: Sequence[str]) -> dict[str, float]:
    """Accuracy, per-class and macro precision/recall/F1 of integer class predictions.

    Args:
      y_true, y_pred: 1-D integer labels in [0, len(label_names)) (lists, numpy or jax arrays).
      label_names: name of each class id; used in the keys "precision/<name>", "recall/<name>",
        "f1/<name>".

    Returns:
      {"accuracy", "precision/<name>", "recall/<name>", "f1/<name>" for every name,
       "precision_macro", "recall_macro", "f1_macro", "mcc"}.

    Macro averages run over every named class, including classes absent from both y_true and y_pred
    (they count as 0), as sklearn does when `labels` is given. Macro F1 is the mean of per-class F1,
    not the F1 of the macro precision and recall.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    n = len(label_names)
    if len(set(label_names)) != n:
        raise ValueError(f"label_names must be distinct, got {list(label_names)}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n):
            raise ValueError(f"{name} must hold integer class ids in [0, {n}), got {np.unique(y)}")
    # int64 also for empty input, which np.asarray([]) makes float.
    y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)

    # Confusion counts with one bincount: row = true class, column = predicted class.
    confusion = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    report = {"accuracy": _div(np.trace(confusion), y_true.size)}
    per_class = {"precision": [], "recall": [], "f1": []}
    for i, name in enumerate(label_names):
        tp = confusion[i, i]
        precision = _div(tp, confusion[:, i].sum())
        recall = _div(tp, confusion[i, :].sum())
        for metric, value in zip(per_class, (precision, recall, _f1(precision, recall))):
            report[f"{metric}/{name}"] = value
            per_class[metric].append(value)
    for metric, values in per_class.items():
        report[f"{metric}_macro"] = float(np.mean(values)) if values else 0.0
    report["mcc"] = _matthews(confusion)
    return report


def relation_report(y_true, y_pred, label_names: Sequence[str], negative_label: str = ""
                    ) -> dict[str, float]:
    """classification_report plus micro_precision, micro_recall, micro_f1 of the positive labels:
    precision over the predictions that are not `negative_label`, recall over the gold relations
    that are not, a prediction right when it equals the gold label. With no negative label these
    equal accuracy."""
    report = classification_report(y_true, y_pred, label_names)
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    negative = list(label_names).index(negative_label) if negative_label else -1
    predicted, gold = y_pred != negative, y_true != negative
    correct = float(np.sum(predicted & (y_pred == y_true)))
    p, r = _div(correct, predicted.sum()), _div(correct, gold.sum())
    report.update(micro_precision=p, micro_recall=r, micro_f1=_f1(p, r))
    return report


def _matthews(confusion: np.ndarray) -> float:
    """Matthews' correlation of a confusion matrix (Gorodkin's R_K; the binary MCC for 2 x 2)."""
    c = confusion.astype(np.float64)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(1), c.sum(0)           # true and predicted counts per class
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return _div(correct * s - t @ p, denominator)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, tie, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=ranks) / counts)[tie]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return _div(float(a @ b), float(np.sqrt((a @ a) * (b @ b))))


def regression_report(y_true, y_pred) -> dict[str, float]:
    """{"pearson", "spearman", "mse"} of real-valued predictions (GLUE's STS-B)."""
    y_true = np.asarray(y_true, np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    return {"pearson": _pearson(y_true, y_pred),
            "spearman": _pearson(_average_ranks(y_true), _average_ranks(y_pred)),
            "mse": float(np.mean((y_true - y_pred) ** 2)) if y_true.size else 0.0}


def entity_report(true_tag_seqs: Sequence[Sequence[str]],
                  pred_tag_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 of IOB2 tag sequences, as seqeval computes them.

    An entity counts as correct only if its type, start and end all match a true entity of the same
    sentence. Entities never cross sentences (seqeval flattens with an "O" between sentences).

    Returns:
      {"entity_precision", "entity_recall", "entity_f1"} (micro: pooled over all types) and
      "precision/<TYPE>", "recall/<TYPE>", "f1/<TYPE>" for every type in the true or predicted tags.
    """
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(true_tag_seqs)} true sequences but {len(pred_tag_seqs)} predicted")
    true_entities: set[tuple[int, str, int, int]] = set()
    pred_entities: set[tuple[int, str, int, int]] = set()
    for s, (true_tags, pred_tags) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sentence {s}: {len(true_tags)} true tags but {len(pred_tags)} "
                             "predicted")
        # The sentence index keeps entities of different sentences apart.
        true_entities.update((s, *e) for e in bio_entities(true_tags))
        pred_entities.update((s, *e) for e in bio_entities(pred_tags))
    correct = true_entities & pred_entities

    def prf(n_correct: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
        precision, recall = _div(n_correct, n_pred), _div(n_correct, n_true)
        return precision, recall, _f1(precision, recall)

    report = dict(zip(("entity_precision", "entity_recall", "entity_f1"),
                      prf(len(correct), len(pred_entities), len(true_entities))))
    for entity_type in sorted({e[1] for e in true_entities | pred_entities}):
        def count(entities):
            return sum(e[1] == entity_type for e in entities)
        p, r, f = prf(count(correct), count(pred_entities), count(true_entities))
        report[f"precision/{entity_type}"] = p
        report[f"recall/{entity_type}"] = r
        report[f"f1/{entity_type}"] = f
    return report
