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
  squad_em_f1            exact match and token F1 of one answer, as SQuAD's official evaluation
                         script (v2.0, which agrees with v1.1 wherever v1.1 has answers) scores it
  cmrc_em_f1             the same for Chinese, as CMRC 2018's cmrc2018_evaluate.py scores it:
                         mixed character/word segmentation and longest-common-substring F1
  qa_report              mean exact match and F1 in percent over a data set, with SQuAD 2.0's
                         HasAns/NoAns split when some questions are unanswerable
  bleu, rouge            generated text: corpus BLEU through `sacrebleu` and ROUGE-1/2/L through
  generation_report      `rouge-score` (imported when called), the implementations papers report;
                         Chinese targets use sacrebleu's "zh" tokenizer and ROUGE on characters

Every value is a Python float (JSON- and TensorBoard-friendly); 0/0 is 0.0 (sklearn's
zero_division=0, seqeval's default). The question-answering scores are plain Python (strings).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from nlp_jax.data.bio import bio_entities
from nlp_jax.data.corpora import HAN


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


# ------------------------------------------------------------------------------------------------
# Extractive question answering: SQuAD (English) and CMRC 2018 (Chinese).

_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normalize_answer(s: str) -> str:
    """SQuAD's normalize_answer: lower-case, drop ASCII punctuation, drop the articles a/an/the,
    collapse whitespace. Order matters: "the." loses its "." before the article rule sees "the"."""
    s = "".join(ch for ch in s.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_SQUAD_ARTICLES.sub(" ", s).split())


def _squad_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    """SQuAD 2.0's compute_f1: bag-of-tokens overlap (a token counts as often as it appears in
    both). An empty side scores 1 only against another empty side: that is how "no answer" is
    right."""
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(prediction_tokens), num_same / len(gold_tokens)
    return 2.0 * precision * recall / (precision + recall)


def _check_golds(golds: Sequence[str]) -> None:
    # A bare string would be iterated as one gold answer per character and score nonsense.
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answers, not the string {golds!r}")


def squad_em_f1(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1), each in [0, 1], of one predicted answer against its gold answers, as
    SQuAD's official script computes them: the best over the gold answers, each taken separately.

    As SQuAD 2.0 does, gold answers that normalise to "" are dropped, and a question with none left
    (`golds` empty: unanswerable) has the single gold answer "", which only an answer that
    normalises to "" matches (EM 1, F1 1). v1.1 has no such answers and otherwise agrees.
    """
    _check_golds(golds)
    prediction = _normalize_answer(prediction)
    golds = [g for g in map(_normalize_answer, golds) if g] or [""]
    exact = max(float(prediction == g) for g in golds)
    f1 = max(_squad_f1(prediction.split(), g.split()) for g in golds)
    return exact, f1


# cmrc2018_evaluate.py's sp_char list. It also lists "……", but it tests one character at a time,
# so that two-character entry never matches and "…" is kept; so it is left out here.
_CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")


def _is_cjk(char: str) -> bool:
    # The script's range: CJK Unified Ideographs up to U+9FA5 (not the later additions to U+9FFF).
    return "\u4e00" <= char <= "\u9fa5"


def _remove_punctuation(in_str: str) -> str:
    """cmrc2018_evaluate.py's remove_punctuation: lower-case, strip the ends, drop sp_char. Inner
    spaces stay, so EM tells "北京 大学" from "北京大学"."""
    return "".join(ch for ch in in_str.lower().strip() if ch not in _CMRC_PUNCTUATION)


def _mixed_segmentation(in_str: str) -> list[str]:
    """cmrc2018_evaluate.py's mixed_segmentation(in_str, rm_punc=True): every Chinese character is
    a token; the text between them is split into words (so "2008年" is ["2008", "年"]).

    Punctuation is dropped *before* splitting, as in the script, so it does not separate words:
    "ab-cd" is one token "abcd". The script splits the text between Chinese characters with
    nltk.word_tokenize; this splits it at whitespace only, which is the same except where nltk
    would split off ASCII punctuation the script keeps ("," "." "?" ...) or clitics ("n't").
    """
    segs_out: list[str] = []
    temp_str: list[str] = []
    for char in in_str.lower().strip():
        if char in _CMRC_PUNCTUATION:
            continue
        if _is_cjk(char):
            segs_out.extend("".join(temp_str).split())
            temp_str = []
            segs_out.append(char)
        else:
            temp_str.append(char)
    segs_out.extend("".join(temp_str).split())
    return segs_out


def _find_lcs(s1: list[str], s2: list[str]) -> int:
    """Length of the longest common substring (contiguous run of tokens) of s1 and s2."""
    longest = 0
    previous = [0] * (len(s2) + 1)  # previous[j]: common run ending at s1[i - 1] and s2[j - 1]
    for a in s1:
        current = [0] * (len(s2) + 1)
        for j, b in enumerate(s2):
            if a == b:
                current[j + 1] = previous[j] + 1
                longest = max(longest, current[j + 1])
        previous = current
    return longest


def _cmrc_f1(prediction_segs: list[str], ans_segs: list[str]) -> float:
    # The script gives 0 whenever the LCS is empty, so an empty answer could never be right; for
    # unanswerable questions SQuAD 2.0's rule (empty matches only empty) is used instead.
    if not prediction_segs or not ans_segs:
        return float(prediction_segs == ans_segs)
    lcs_len = _find_lcs(ans_segs, prediction_segs)
    if lcs_len == 0:
        return 0.0
    precision, recall = lcs_len / len(prediction_segs), lcs_len / len(ans_segs)
    return 2.0 * precision * recall / (precision + recall)


def cmrc_em_f1(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1), each in [0, 1], of one predicted answer against its gold answers, as
    CMRC 2018's cmrc2018_evaluate.py computes them (calc_em_score, calc_f1_score): EM compares the
    strings without punctuation, F1 is from the longest common substring of the mixed
    segmentations (precision = LCS / prediction tokens, recall = LCS / answer tokens); the best
    over the gold answers. Empty `golds` (unanswerable) is handled as in `squad_em_f1`.
    """
    _check_golds(golds)
    golds = list(golds) or [""]
    prediction_ = _remove_punctuation(prediction)
    exact = max(float(prediction_ == _remove_punctuation(g)) for g in golds)
    prediction_segs = _mixed_segmentation(prediction)
    f1 = max(_cmrc_f1(prediction_segs, _mixed_segmentation(g)) for g in golds)
    return exact, f1


_QA_SCORERS = {"en": squad_em_f1, "zh": cmrc_em_f1}


def qa_report(predictions: Sequence[str], golds: Sequence[Sequence[str]],
              language: str = "en") -> dict[str, float]:
    """Mean exact match and F1 of extractive QA answers, in percent (0..100) as both official
    scripts print them.

    Args:
      predictions: one predicted answer text per question ("" for "no answer").
      golds: the gold answer texts of each question; an empty list marks it unanswerable.
      language: "en" scores with `squad_em_f1` (SQuAD), "zh" with `cmrc_em_f1` (CMRC 2018).

    Returns:
      {"exact_match", "f1"}; if some question is unanswerable, also SQuAD 2.0's HasAns/NoAns
      split: "has_answer_exact_match", "has_answer_f1" over the answerable questions and
      "no_answer_exact_match", "no_answer_f1" over the others, each pair only if its subset is
      not empty.
    """
    if language not in _QA_SCORERS:
        raise ValueError(f"language must be one of {sorted(_QA_SCORERS)}, got {language!r}")
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answer lists")
    score = _QA_SCORERS[language]
    scores = [score(p, g) for p, g in zip(predictions, golds)]

    def means(subset: list[tuple[float, float]]) -> tuple[float, float]:
        return (100.0 * _div(sum(em for em, _ in subset), len(subset)),
                100.0 * _div(sum(f1 for _, f1 in subset), len(subset)))

    report = dict(zip(("exact_match", "f1"), means(scores)))
    answerable = [len(g) > 0 for g in golds]
    if not all(answerable):
        for prefix, wanted in (("has_answer", True), ("no_answer", False)):
            subset = [s for s, a in zip(scores, answerable) if a == wanted]
            if subset:
                report[f"{prefix}_exact_match"], report[f"{prefix}_f1"] = means(subset)
    return report


# ----------------------------------------------------------------------------------------------
# Generated text (translation, summarisation). The libraries define the numbers papers report, so
# they are used rather than rewritten; imported when called (only generation needs them).


def bleu(hypotheses: Sequence[str], references: Sequence[str], chinese: bool = False) -> float:
    """Corpus BLEU (0..100) of one reference per hypothesis, as `sacrebleu.corpus_bleu` computes it
    with its defaults: tokenize="zh" (each Han character a token) for Chinese targets, else "13a"
    (WMT's mteval tokenizer)."""
    import sacrebleu  # pylint: disable=g-import-not-at-top

    _check_pairs(hypotheses, references)
    tokenize = "zh" if chinese else "13a"
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)],
                                       tokenize=tokenize).score)


class _CharacterTokenizer:
    """rouge-score's tokenizer interface for Chinese: every Han character is a token, runs of other
    letters and digits are lower-cased words, punctuation and spaces are dropped. (rouge-score's
    default tokenizer keeps only [a-z0-9], so Chinese text would score 0 or nothing at all.)"""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", HAN.sub(lambda m: f" {m.group()} ", text.lower()))


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; give "
                         "one reference per hypothesis")


def rouge(hypotheses: Sequence[str], references: Sequence[str], chinese: bool = False
          ) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures over the examples, in percent, from
    `rouge_score.rouge_scorer.RougeScorer`: English with its default tokenizer and the Porter
    stemmer (as summarisation papers report CNN/DailyMail and XSum), Chinese on characters
    (`_CharacterTokenizer`). Returns {"rouge1", "rouge2", "rougeL"}; 0.0 for no examples."""
    from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

    _check_pairs(hypotheses, references)
    types = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=not chinese,
                                      tokenizer=_CharacterTokenizer() if chinese else None)
    totals = dict.fromkeys(types, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(reference, hypothesis)  # (target, prediction)
        for t in types:
            totals[t] += scores[t].fmeasure
    return {t: 100.0 * _div(v, len(hypotheses)) for t, v in totals.items()}


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Percent of hypotheses equal to their reference up to whitespace (runs of spaces, ends):
    sentence accuracy, e.g. of a Pinyin transliteration."""
    _check_pairs(hypotheses, references)
    same = sum(" ".join(h.split()) == " ".join(r.split()) for h, r in zip(hypotheses, references))
    return 100.0 * _div(same, len(hypotheses))


GENERATION_METRICS = ("bleu", "rouge", "exact_match")


def generation_report(hypotheses: Sequence[str], references: Sequence[str], chinese: bool = False,
                      metrics: Sequence[str] = ("bleu", "rouge")) -> dict[str, float]:
    """The test row of a generation task: {"bleu"} and/or {"rouge1", "rouge2", "rougeL"} and/or
    {"exact_match"}, as `metrics` names them ("bleu", "rouge", "exact_match"); all in percent.

    chinese: the references are Chinese text (see `nlp_jax.data.seq2seq.target_is_chinese`)."""
    unknown = [m for m in metrics if m not in GENERATION_METRICS]
    if unknown:
        raise ValueError(f"unknown generation metrics {unknown}; use some of {GENERATION_METRICS}")
    report = {}
    if "bleu" in metrics:
        report["bleu"] = bleu(hypotheses, references, chinese)
    if "rouge" in metrics:
        report.update(rouge(hypotheses, references, chinese))
    if "exact_match" in metrics:
        report["exact_match"] = exact_match(hypotheses, references)
    return report
