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


# ------------------------------------------------------------------------------------------------
# Extractive question answering: squad_em_f1, cmrc_em_f1, qa_report (hand-computed cases)

def test_squad_normalisation_case_punctuation_articles_whitespace():
    from nlp_jax.metrics import squad_em_f1
    assert squad_em_f1("The  Cat!", ["cat"]) == (1.0, 1.0)
    assert squad_em_f1("an apple, a pear", ["Apple pear."]) == (1.0, 1.0)
    # Articles go only as whole words: "theory" keeps its "the", "Anna" its "an".
    assert squad_em_f1("theory", ["ory"]) == (0.0, 0.0)
    assert squad_em_f1("Anna", ["na"]) == (0.0, 0.0)
    # Punctuation goes before the article rule: "the." is the article "the".
    assert squad_em_f1("the. dog", ["dog"]) == (1.0, 1.0)
    # Punctuation inside a token joins its halves ("o'neil" -> "oneil"), not split them.
    assert squad_em_f1("O'Neil", ["oneil"]) == (1.0, 1.0)


def test_squad_partial_f1_by_hand():
    from nlp_jax.metrics import squad_em_f1
    # [big, red, dog] vs [red, dog, barks]: 2 in common, P = R = 2/3, F1 = 2/3.
    em, f1 = squad_em_f1("the big red dog", ["red dog barks"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3, abs=1e-12)
    # Bag of tokens, repeats counted: [dog, dog, dog] vs [dog, dog]: 2 in common, P = 2/3, R = 1,
    # F1 = 4/5 (comparing sets of tokens would give 1).
    assert squad_em_f1("dog dog dog", ["dog dog"])[1] == pytest.approx(4 / 5, abs=1e-12)
    # Order does not matter for F1, it does for EM.
    assert squad_em_f1("dog red", ["red dog"]) == (0.0, 1.0)
    assert squad_em_f1("cat", ["dog"]) == (0.0, 0.0)


def test_squad_takes_the_best_gold_answer_for_each_score():
    from nlp_jax.metrics import squad_em_f1
    # F1 against each gold: "red dog barks" 2/3; "big red dog" 1 ... so the max is 1.
    em, f1 = squad_em_f1("big red dog", ["red dog barks", "a big red dog", "cat"])
    assert (em, f1) == (1.0, 1.0)
    # No exact match; F1 best from the second gold: [red] vs [red, dog] -> P 1, R 1/2, F1 2/3,
    # the first gives [red] vs [blue] -> 0.
    em, f1 = squad_em_f1("red", ["blue", "red dog"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3, abs=1e-12)


def test_squad_unanswerable():
    from nlp_jax.metrics import squad_em_f1
    assert squad_em_f1("", []) == (1.0, 1.0)
    assert squad_em_f1("the ...", []) == (1.0, 1.0)       # normalises to ""
    assert squad_em_f1("x", []) == (0.0, 0.0)
    # An answerable question: the empty prediction is wrong.
    assert squad_em_f1("", ["cat"]) == (0.0, 0.0)
    # SQuAD 2.0 drops gold answers that normalise to "": ["the", "cat"] is scored as ["cat"].
    assert squad_em_f1("", ["the", "cat"]) == (0.0, 0.0)
    assert squad_em_f1("cat", ["the", "cat"]) == (1.0, 1.0)
    with pytest.raises(TypeError, match="sequence of answers"):
        squad_em_f1("cat", "cat")


def test_cmrc_chinese_characters_lcs_f1():
    from nlp_jax.metrics import cmrc_em_f1
    # [北, 京, 大, 学] vs [北, 京]: LCS 2, P = 2/4, R = 2/2, F1 = 2/3.
    em, f1 = cmrc_em_f1("北京大学", ["北京"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3, abs=1e-12)
    # Longest common *substring*, not subsequence: [北, 京, 大, 学] vs [北, 大]: the runs in common
    # are one token long (a subsequence would be 2): P = 1/4, R = 1/2, F1 = 1/3.
    assert cmrc_em_f1("北京大学", ["北大"])[1] == pytest.approx(1 / 3, abs=1e-12)
    # Best over golds: the second gold matches exactly.
    assert cmrc_em_f1("北京大学", ["北京", "北京大学"]) == (1.0, 1.0)


def test_cmrc_mixed_segmentation_keeps_words_and_numbers_whole():
    from nlp_jax.metrics import _mixed_segmentation, cmrc_em_f1
    assert _mixed_segmentation("2008年北京") == ["2008", "年", "北", "京"]
    expected = ["在", "beijing", "olympics", "期", "间"]
    assert _mixed_segmentation("在 Beijing Olympics 期间") == expected
    # Punctuation is dropped before splitting, so it does not separate words (as in the script).
    assert _mixed_segmentation("《ab-cd》，年") == ["abcd", "年"]
    # Through F1: [2008, 年, 北, 京] vs [2008]: LCS 1, P = 1/4, R = 1, F1 = 2/5 (were "2008" four
    # tokens it would be P = 4/7, R = 1, F1 = 8/11).
    assert cmrc_em_f1("2008年北京", ["2008"])[1] == pytest.approx(2 / 5, abs=1e-12)
    # English is lower-cased: [hello, 世, 界] vs [hello]: F1 = 2 * (1/3) / (4/3) = 1/2.
    assert cmrc_em_f1("Hello世界", ["hello"])[1] == pytest.approx(1 / 2, abs=1e-12)


def test_cmrc_exact_match_ignores_chinese_punctuation():
    from nlp_jax.metrics import cmrc_em_f1
    assert cmrc_em_f1("《北京大学》。", ["北京大学"]) == (1.0, 1.0)
    assert cmrc_em_f1("“北京”（中国）", ["北京中国"]) == (1.0, 1.0)
    # "…" is not in the script's list (its "……" entry never matches one character): it stays.
    assert cmrc_em_f1("北京…", ["北京"])[0] == 0.0
    # Inner spaces stay for EM (the script only strips the ends), though F1 ignores them.
    assert cmrc_em_f1("北京 大学", ["北京大学"]) == (0.0, 1.0)
    assert cmrc_em_f1("  北京大学 ", ["北京大学"]) == (1.0, 1.0)


def test_cmrc_unanswerable():
    from nlp_jax.metrics import cmrc_em_f1
    assert cmrc_em_f1("", []) == (1.0, 1.0)
    assert cmrc_em_f1("。", []) == (1.0, 1.0)       # only punctuation: empty
    assert cmrc_em_f1("北京", []) == (0.0, 0.0)
    assert cmrc_em_f1("", ["北京"]) == (0.0, 0.0)


def test_qa_report_averages_in_percent():
    from nlp_jax.metrics import qa_report
    # EM (1, 0, 0), F1 (1, 2/3, 0): EM 100/3, F1 100 * (5/3) / 3 = 500/9.
    report = qa_report(["The Cat", "the big red dog", "cat"],
                       [["cat"], ["red dog barks"], ["dog", "bird"]])
    assert report.keys() == {"exact_match", "f1"}   # all answerable: no HasAns/NoAns split
    assert report["exact_match"] == pytest.approx(100 / 3, abs=1e-9)
    assert report["f1"] == pytest.approx(500 / 9, abs=1e-9)
    assert all(type(v) is float for v in report.values())
    # Chinese: EM (0, 1), F1 (2/3, 1) -> EM 50, F1 250/3.
    report = qa_report(["北京大学", "《上海》"], [["北京"], ["上海"]], language="zh")
    assert report["exact_match"] == pytest.approx(50.0, abs=1e-9)
    assert report["f1"] == pytest.approx(250 / 3, abs=1e-9)
    # The language picks the scorer: as English, "北京大学" is one token and F1 against 北京 is 0.
    assert qa_report(["北京大学"], [["北京"]], language="en")["f1"] == 0.0


def test_qa_report_has_answer_and_no_answer_split():
    from nlp_jax.metrics import qa_report
    # Answerable: (EM 1, F1 1), (0, 2/3). Unanswerable: "" right (1, 1), "x" wrong (0, 0).
    report = qa_report(["cat", "the big red dog", "", "x"],
                       [["cat"], ["red dog barks"], [], []])
    expected = {"exact_match": 50.0, "f1": 100 * (8 / 3) / 4,
                "has_answer_exact_match": 50.0, "has_answer_f1": 100 * (5 / 3) / 2,
                "no_answer_exact_match": 50.0, "no_answer_f1": 50.0}
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-9), key
    assert all(type(v) is float for v in report.values())
    # Only unanswerable questions: no has_answer keys.
    report = qa_report(["", "北京"], [[], []], language="zh")
    assert report == {"exact_match": 50.0, "f1": 50.0,
                      "no_answer_exact_match": 50.0, "no_answer_f1": 50.0}


def test_qa_report_empty_and_bad_input():
    from nlp_jax.metrics import qa_report
    assert qa_report([], []) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="gold answer lists"):
        qa_report(["a"], [])
    with pytest.raises(ValueError, match="language"):
        qa_report(["a"], [["a"]], language="fr")
