"""Metrics against hand computation, and against scikit-learn when it is installed.

The expected entity numbers are what seqeval 1.2.2 (default mode) gives on the same inputs; they
were checked with it once, but are written out by hand so the tests need neither seqeval nor
sklearn. The chunking of tags into entities is tested in test_bio.py.
"""
import numpy as np
import pytest

from nlp_jax.metrics import classification_report, entity_report

# ------------------------------------------------------------------------------------------------
# classification_report

# 4 classes, "unused" in neither y_true nor y_pred: it must still count (as 0) in the macro means.
NAMES = ["neg", "neu", "pos", "unused"]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 2, 1]


def test_classification_report_by_hand():
    report = classification_report(Y_TRUE, Y_PRED, NAMES)
    # neg: predicted at 0,1 (both right), true at 0,1,2.
    # neu: predicted at 2,3,8 (3 right), true at 3,4.
    # pos: predicted at 4..7 (5,6,7 right), true at 5..8.
    expected = {
        "accuracy": 6 / 9,
        "precision/neg": 1.0, "recall/neg": 2 / 3, "f1/neg": 4 / 5,
        "precision/neu": 1 / 3, "recall/neu": 1 / 2, "f1/neu": 2 / 5,
        "precision/pos": 3 / 4, "recall/pos": 3 / 4, "f1/pos": 3 / 4,
        "precision/unused": 0.0, "recall/unused": 0.0, "f1/unused": 0.0,
        "precision_macro": 25 / 48, "recall_macro": 23 / 48,
        "f1_macro": 39 / 80,  # mean of per-class F1, not F1 of the macro P and R
        # Matthews (R_K): 9 examples, 6 right, true counts t = (3, 2, 4, 0), predicted p = (2, 3,
        # 4, 0): (6 * 9 - t.p) / sqrt((81 - p.p)(81 - t.t)) = (54 - 28) / sqrt(52 * 52) = 1/2.
        "mcc": 0.5,
    }
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-12), key
    assert all(type(v) is float for v in report.values())


def test_classification_report_zero_division_is_zero():
    # "b" is never predicted: its precision is 0/0 -> 0.0, not nan.
    report = classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert report["precision/b"] == 0.0 and report["recall/b"] == 0.0 and report["f1/b"] == 0.0
    assert report["precision/a"] == 0.5 and report["recall/a"] == 1.0
    assert report["f1/a"] == pytest.approx(2 / 3)
    assert report["f1_macro"] == pytest.approx(1 / 3)


def test_classification_report_accepts_empty_and_rejects_bad_input():
    assert classification_report([], [], ["a", "b"])["accuracy"] == 0.0
    with pytest.raises(ValueError, match="labels"):
        classification_report([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="class ids"):
        classification_report([0, 2], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="class ids"):
        classification_report([0.0, 1.0], [0, 1], ["a", "b"])


@pytest.mark.parametrize("seed", range(5))
def test_classification_report_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    # n_classes + 1 named classes, the last never drawn: sklearn keeps it in `labels` too.
    names = [f"c{i}" for i in range(n_classes + 1)]
    y_true = rng.integers(0, n_classes, size=50)
    y_pred = np.where(rng.random(50) < 0.6, y_true, rng.integers(0, n_classes, size=50))
    report = classification_report(y_true, y_pred, names)
    labels = list(range(len(names)))
    p, r, f, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(names):
        assert report[f"precision/{name}"] == pytest.approx(p[i], abs=1e-12)
        assert report[f"recall/{name}"] == pytest.approx(r[i], abs=1e-12)
        assert report[f"f1/{name}"] == pytest.approx(f[i], abs=1e-12)
    p, r, f, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert report["precision_macro"] == pytest.approx(p, abs=1e-12)
    assert report["recall_macro"] == pytest.approx(r, abs=1e-12)
    assert report["f1_macro"] == pytest.approx(f, abs=1e-12)
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# entity_report

TRUE_SEQS = [
    ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],  # PER(0,2) LOC(3,5)
    ["O", "B-ORG", "I-ORG", "I-ORG"],           # ORG(1,4)
    ["B-LOC", "B-LOC"],                         # LOC(0,1) LOC(1,2)
    ["O", "B-PER"],                             # PER(1,2), at the sentence end
    ["I-PER", "O"],                             # PER(0,1): must not merge with the one above
    ["B-PER", "I-LOC"],                         # PER(0,1) LOC(1,2)
    ["O", "O"],
]
PRED_SEQS = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],      # PER(0,2) right; LOC(3,4) wrong end
    ["I-ORG", "I-ORG", "I-ORG", "I-ORG"],       # ORG(0,4) wrong start
    ["B-LOC", "I-LOC"],                         # LOC(0,2): two true entities merged, wrong
    ["O", "B-PER"],                             # right
    ["I-PER", "O"],                             # right
    ["B-PER", "I-PER"],                         # PER(0,2) wrong
    ["B-MISC", "O"],                            # a type found only in the predictions
]


def test_entity_report_by_hand():
    report = entity_report(TRUE_SEQS, PRED_SEQS)
    # 9 true entities (PER 4, LOC 4, ORG 1), 8 predicted (PER 4, LOC 2, ORG 1, MISC 1);
    # 3 right, all PER.
    expected = {
        "entity_precision": 3 / 8, "entity_recall": 3 / 9, "entity_f1": 2 * 3 / (8 + 9),
        "precision/PER": 3 / 4, "recall/PER": 3 / 4, "f1/PER": 3 / 4,
        "precision/LOC": 0.0, "recall/LOC": 0.0, "f1/LOC": 0.0,
        "precision/ORG": 0.0, "recall/ORG": 0.0, "f1/ORG": 0.0,
        "precision/MISC": 0.0, "recall/MISC": 0.0, "f1/MISC": 0.0,  # recall 0/0 -> 0.0
    }
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-12), key
    assert all(type(v) is float for v in report.values())


def test_entity_report_keeps_sentences_apart():
    # As one sentence, "B-PER I-PER" would be one entity PER(0,2) and match nothing; as two
    # sentences both sides have PER(0,1) in each, all right.
    true = [["B-PER"], ["I-PER"]]
    report = entity_report(true, [["B-PER"], ["B-PER"]])
    assert report["entity_precision"] == report["entity_recall"] == report["entity_f1"] == 1.0
    # Same entity span in another sentence is not a match.
    report = entity_report([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["B-PER", "O"]])
    assert report["entity_f1"] == 0.0


def test_entity_report_perfect_and_empty():
    report = entity_report(TRUE_SEQS, TRUE_SEQS)
    assert all(v == 1.0 for k, v in report.items()), report
    report = entity_report([["O", "O"]], [["O", "O"]])
    assert report == {"entity_precision": 0.0, "entity_recall": 0.0, "entity_f1": 0.0}


def test_entity_report_rejects_length_mismatch():
    with pytest.raises(ValueError, match="sequences"):
        entity_report([["O"]], [])
    with pytest.raises(ValueError, match="tags"):
        entity_report([["O", "B-PER"]], [["O"]])


def test_matthews_correlation_agrees_with_sklearn():
    from sklearn.metrics import matthews_corrcoef
    from nlp_jax.metrics import classification_report
    rng = np.random.default_rng(0)
    for n in (2, 3):
        y_true, y_pred = rng.integers(0, n, 200), rng.integers(0, n, 200)
        y_pred[:120] = y_true[:120]     # correlated, not perfectly
        names = [str(i) for i in range(n)]
        assert classification_report(y_true, y_pred, names)["mcc"] == pytest.approx(
            matthews_corrcoef(y_true, y_pred), abs=1e-12)
    assert classification_report([0, 0, 0], [0, 0, 0], ["a", "b"])["mcc"] == 0.0  # sklearn: 0


def test_pearson_and_spearman_agree_with_scipy_ties_included():
    from scipy import stats
    from nlp_jax.metrics import regression_report
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 6, 100).astype(float)          # STS-B-like scores with ties
    y_pred = y_true + rng.normal(0, 1.5, 100)
    y_pred[:10] = 2.5                                          # ties in the predictions too
    report = regression_report(y_true, y_pred)
    assert report["pearson"] == pytest.approx(stats.pearsonr(y_true, y_pred)[0], abs=1e-12)
    assert report["spearman"] == pytest.approx(stats.spearmanr(y_true, y_pred)[0], abs=1e-12)
    assert report["mse"] == pytest.approx(np.mean((y_true - y_pred) ** 2))
