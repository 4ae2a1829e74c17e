"""Tests of nlp_jax.data.seq2seq (tasks, encoding, detokenizing) and the generation metrics."""

import json

import numpy as np
import pytest

from nlp_jax import data, metrics
from nlp_jax.data import seq2seq, wordpiece


@pytest.fixture(scope="module")
def pinyin():
    return seq2seq.load_seq2seq_task("pinyin", {"max_examples": 200}, split_seed=0)


@pytest.fixture(scope="module")
def tokenizer(pinyin):
    texts = [e[k] for split in pinyin.values() for e in split for k in ("source", "target")]
    return data.train_tokenizer(texts, 3000, None, "char")  # Hanzi and Pinyin letters


def test_pinyin_resolves_polyphones_by_word_as_pypinyin_does():
    pypinyin = pytest.importorskip("pypinyin")
    words = ["我", "去", "银行", "，", "他", "在", "行走", "。"]
    target = seq2seq.to_pinyin(words)
    assert target == "wo3 qu4 yin2 hang2 ， ta1 zai4 xing2 zou3 。"
    assert target.split() == pypinyin.lazy_pinyin(words, style=pypinyin.Style.TONE3,
                                                  neutral_tone_with_five=True)


def test_pinyin_task_splits_real_sentences(pinyin):
    assert [len(pinyin[s]) for s in ("train", "dev", "test")] == [200, 200, 200]
    sources = {s: {e["source"] for e in pinyin[s]} for s in pinyin}
    assert not sources["train"] & sources["dev"] and not sources["dev"] & sources["test"]
    for e in pinyin["train"][:50]:
        assert 2 <= len(e["source"]) <= 64
        # One syllable per Han character: the task is an alignment-free transliteration.
        syllables = [t for t in e["target"].split() if t[-1] in "12345" and t[:-1].isalpha()]
        assert len(syllables) == len(data.corpora.HAN.findall(e["source"]))


def test_headline_task_has_articles_and_their_headlines():
    task = seq2seq.load_seq2seq_task("headline", {"max_source_chars": 100}, split_seed=0)
    assert all(len(task[s]) > 100 for s in ("train", "dev", "test"))
    e = task["train"][0]
    assert len(e["source"]) <= 100 and e["target"] not in e["source"]


def test_encode_shifts_targets_right_behind_bos(pinyin, tokenizer):
    examples = pinyin["dev"][:20]
    out = seq2seq.encode_seq2seq(examples, tokenizer, max_source_len=24, max_target_len=32)
    assert out["input_ids"].shape == (20, 24) and out["labels"].shape == (20, 32)
    w = out["label_weights"] > 0
    np.testing.assert_array_equal(out["decoder_input_ids"][:, 0], tokenizer.cls_id)
    # decoder_input_ids is labels shifted right by one, behind BOS.
    np.testing.assert_array_equal(out["decoder_input_ids"][:, 1:][w[:, 1:]], out["labels"][:, :-1][w[:, 1:]])
    np.testing.assert_array_equal(out["decoder_attention_mask"], w)
    lengths = w.sum(1)
    np.testing.assert_array_equal(out["labels"][np.arange(20), lengths - 1], tokenizer.sep_id)
    assert np.all(out["labels"][~w] == tokenizer.pad_id)
    for i, e in enumerate(examples):
        pieces = tokenizer.encode(e["target"])[:31]
        np.testing.assert_array_equal(out["labels"][i, : len(pieces)], pieces)
        source = tokenizer.encode(e["source"])[:24]
        assert out["attention_mask"][i].sum() == len(source)
    # Short targets round-trip through detokenize (generation stops at EOS, drops specials).
    short = [i for i in range(20) if lengths[i] < 32]
    for i in short:
        assert seq2seq.detokenize(tokenizer, out["decoder_input_ids"][i]) == tokenizer.decode(
            tokenizer.encode(examples[i]["target"]))


def test_detokenize_stops_at_eos_and_joins_cjk():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "们", "去", "银", "行", "hello", "##s"]
    wp = wordpiece.WordPieceTokenizer(vocab)
    assert seq2seq.detokenize(wp, [2, 5, 6, 7, 8, 9, 10, 11, 3, 7, 7]) == "我们去银行 hellos"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tsv_and_jsonl_files(tmp_path):
    tsv = write(tmp_path / "train.tsv", "source\ttarget\n你好\tni3 hao3\n再见\tzai4 jian4\n")
    rows = [{"source": f"a{i}", "target": f"b{i}"} for i in range(20)]
    jsonl = write(tmp_path / "dev.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = seq2seq.load_seq2seq_task("files", {"train_file": tsv, "dev_file": jsonl})
    assert task["train"] == [{"source": "你好", "target": "ni3 hao3"},
                             {"source": "再见", "target": "zai4 jian4"}]
    assert task["dev"] == rows and task["test"] == rows
    held = seq2seq.load_seq2seq_task("files", {"train_file": jsonl})
    assert len(held["train"]) == 18 and len(held["dev"]) == 2
    bad = write(tmp_path / "bad.tsv", "one column only\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: 1 tab-separated columns"):
        seq2seq.load_seq2seq_task("files", {"train_file": bad})


# ----------------------------------------------------------------------------------------------
# TFDS (offline: mock_data) and the metrics on it.


@pytest.mark.parametrize("name, cfg, source_key, target_key", [
    ("wmt19_translate/zh-en", {}, "zh", "en"),
    ("wmt19_translate/zh-en", {"source_lang": "en", "target_lang": "zh"}, "en", "zh"),
    ("cnn_dailymail", {}, "article", "highlights"),
    ("xsum", {}, "document", "summary"),
])
def test_tfds_tasks_through_mock_data(name, cfg, source_key, target_key):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        task = seq2seq.load_seq2seq_task(name, cfg)
        record = tfds.data_source(name, split="train")[0]
    assert all(len(task[s]) >= 1 for s in ("train", "dev", "test"))
    assert task["train"][0]["source"] == seq2seq.decode_feature(record[source_key])
    assert task["train"][0]["target"] == seq2seq.decode_feature(record[target_key])


def test_bleu_and_rouge_rows_equal_the_libraries_on_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    sacrebleu = pytest.importorskip("sacrebleu")
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    with tfds.testing.mock_data(num_examples=8):
        task = seq2seq.load_seq2seq_task("xsum", {})
    refs = [e["target"] for e in task["test"]]
    hyps = [e["source"] for e in task["test"]]  # documents as "summaries": a real mismatch
    row = metrics.generation_report(hyps, refs, chinese=False)
    assert set(row) == {"bleu", "rouge1", "rouge2", "rougeL"}
    assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * np.mean([scorer.score(r, h)[t].fmeasure for h, r in zip(hyps, refs)])
        assert row[t] == pytest.approx(expected)
    # Identical texts score 100 (ROUGE-2 needs two tokens: a one-word reference has no bigram).
    refs = [r for r in refs if len(r.split()) >= 2]
    same = metrics.generation_report(refs, refs, chinese=False, metrics=("bleu", "rouge", "exact_match"))
    assert all(v == pytest.approx(100.0) for v in same.values())


def test_chinese_rouge_counts_characters():
    refs, hyps = ["我们今天去银行取钱。"], ["我们明天去银行。"]
    row = metrics.generation_report(hyps, refs, chinese=True)
    # rouge-score's own tokenizer drops every CJK character (this would be 0).
    assert row["rouge1"] == pytest.approx(100 * 2 * 6 / (7 + 9))   # 6 shared characters
    assert row["rougeL"] > 0 and row["bleu"] > 0
    sacrebleu = pytest.importorskip("sacrebleu")
    assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)
    assert metrics.generation_report(refs, refs, chinese=True)["rouge2"] == pytest.approx(100.0)
