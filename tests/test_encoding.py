"""Tests of nlp_jax.data.encoding (and the tokenizers' character offsets it relies on)."""

import logging
import random
import unicodedata

import ml_collections
import numpy as np
import pytest

from nlp_jax.data import corpora, encoding, sources
from nlp_jax.data import tokenizer as tokenizer_lib
from nlp_jax.data.bio import bio_entities, entities_from_pieces
from nlp_jax.data.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def ner():
    return sources.load_task(ml_collections.ConfigDict(dict(name="ner", source="builtin")))


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory):
    """A small SentencePiece model (~0.5 s) on built-in review and news text."""
    sentiment, ner_items = corpora.sentiment_splits(0), corpora.ner_splits(0)
    sentences = [t for t, _ in sentiment["train"][:300]]
    sentences += ["".join(c) for c, _ in ner_items["train"][:300]] + ["１２３，ＡＢＣ abc"] * 5
    path = str(tmp_path_factory.mktemp("tok") / "spm.model")
    return tokenizer_lib.train_tokenizer(sentences, 4000, path)


def small_wordpiece(lower_case=True) -> WordPieceTokenizer:
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,.!'-江泽民说ς"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars),
             "hello", "##llo", "new", "york", "##ork"]
    return WordPieceTokenizer(vocab, lower_case=lower_case)


# ----------------------------------------------------------------------------------------------
# Offsets.


def test_spm_offsets_full_width(spm_tok):
    for text in ["你好，１２３ＡＢＣ abc", "  江泽民  说：“ｘ”。", "a😀b", "ﬁne ½"]:
        ids, spans = spm_tok.encode_with_offsets(text)
        assert ids == spm_tok.encode(text)
        assert [s for s, _ in spans] == sorted(s for s, _ in spans)
        for i, (s, e) in zip(ids, spans):
            assert 0 <= s <= e <= len(text)
            piece = spm_tok.id_to_piece(i).replace("▁", " ").strip()
            # What a piece covers normalises (NFKC) to the piece text, whitespace aside.
            if s < e and i != spm_tok.unk_id:
                assert piece in unicodedata.normalize("NFKC", text[s:e]).replace(" ", "") or \
                    unicodedata.normalize("NFKC", text[s:e]).strip() in piece, (text, piece)
    text = "你好，１２"
    ids, spans = spm_tok.encode_with_offsets(text)
    covered = "".join(text[s:e] for s, e in spans)
    assert covered == text  # every character, full-width ones included, in one piece
    assert spm_tok.encode_batch_with_offsets([text, "abc"])[0] == (ids, spans)


def test_spm_proto_byte_offsets(spm_tok):
    # The fallback for sentencepiece without offset_mapping converts UTF-8 byte offsets.
    text = "你好，１２ab"
    proto = spm_tok._sp.encode(text, out_type="proto")
    assert tokenizer_lib._proto_offsets(proto, text) == spm_tok.encode_with_offsets(text)


def test_wordpiece_offsets():
    tok = small_wordpiece()
    text = "Hello, NEW-York 江泽民说 ΟΔΟΣ ﬁ"
    ids, spans = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    pieces = [(tok.id_to_piece(i), text[s:e]) for i, (s, e) in zip(ids, spans)]
    assert pieces[:7] == [("hello", "Hello"), (",", ","), ("new", "NEW"), ("-", "-"),
                          ("york", "York"), ("江", "江"), ("泽", "泽")]
    assert ("[UNK]", "ΟΔΟΣ") in pieces and ("[UNK]", "ﬁ") in pieces
    rng = random.Random(0)
    alphabet = list("abcXYZ ,.-\t") + ["é", "e\u0301", "İ", "Σ", "ß", "江", "\u2028", "\x00",
                                       "\u0301", "A\u030a", "한", "😀"]
    for lower in (True, False):
        tok = small_wordpiece(lower)
        for _ in range(500):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
            ids, spans = tok.encode_with_offsets(text)
            assert ids == tok.encode(text), text
            assert all(0 <= s < e <= len(text) for s, e in spans), (text, spans)


# ----------------------------------------------------------------------------------------------
# Encoding.


def test_encode_classification_layout(spm_tok, caplog):
    examples = [
        {"text": "好", "text_b": None, "label": 1},
        {"text": "好", "text_b": "不好", "label": 0},
        {"text": "非常好" * 20, "text_b": "不好" * 20, "label": 0},
        {"text": "非常好" * 20, "text_b": None, "label": 1},
    ]
    task = sources.TaskData("t", "classification", ("a", "b"), {"train": examples})
    with caplog.at_level(logging.WARNING):
        f = encoding.encode_task(task, "train", spm_tok, 16)
    assert [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()] == [
        "Task t split train: 2 of 4 examples truncated to max_seq_len=16"
    ]
    cls, sep, pad = spm_tok.cls_id, spm_tok.sep_id, spm_tok.pad_id
    a, b = spm_tok.encode("好"), spm_tok.encode("不好")
    assert f["input_ids"][0, : len(a) + 3].tolist() == [cls, *a, sep, pad]
    row = [cls, *a, sep, *b, sep]
    assert f["input_ids"][1, : len(row)].tolist() == row
    assert f["token_type_ids"][1, : len(row) + 1].tolist() == [0] * (len(a) + 2) + [1] * (
        len(b) + 1) + [0]
    assert f["attention_mask"][1].sum() == len(row)
    assert f["labels"].tolist() == [1, 0, 0, 1] and f["labels"].dtype == np.int32
    assert (f["attention_mask"][2:] == 1).all()  # truncated to fill all 16
    types = f["token_type_ids"][2]
    n_a, n_b = (types == 0).sum() - 2, (types == 1).sum() - 1
    assert abs(n_a - n_b) <= 1 and f["input_ids"][2, -1] == sep  # longest-first
    assert all(v.shape[0] == 4 and v.dtype == np.int32 for v in f.values())


def test_windows_and_max_context_by_hand():
    assert encoding.windows(5, 8, 4) == [(0, 5)]                      # fits: one window
    assert encoding.windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert encoding.windows(9, 4, 4) == [(0, 4), (4, 8), (8, 9)]      # BERT's: the last is short
    with pytest.raises(ValueError, match="doc_stride=5 must be in"):
        encoding.windows(10, 4, 5)                                    # would skip a piece
    # Windows [0,4) [3,7) [6,10): piece 3 has 0 pieces right of it in the first window and 0 left
    # of it in the second, a tie that goes to the first; piece 4 has 1 left, 2 right in the
    # second (min 1) and is not in the first.
    assert encoding.max_context([(0, 4), (3, 7), (6, 10)], 10) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Longer windows win ties: piece 2 has min(1, 1) = 1 in [1, 4) and min(2, 1) = 1 in [0, 4).
    assert encoding.max_context([(1, 4), (0, 4)], 4)[2] == 1


def test_encode_ner_reads_every_sentence_whole_in_windows(ner, spm_tok):
    """Long sentences take several rows; each piece is scored in exactly one of them, and the
    merged gold piece tags read back as the gold entities, on whole sentences."""
    from nlp_jax.train.recipes.finetune import decode   # pylint: disable=import-outside-toplevel
    examples = ner.splits["test"][:400]
    task = sources.TaskData("ner", ner.kind, ner.label_names, {"test": examples})
    f = encoding.encode_task(task, "test", spm_tok, 64, doc_stride=20)
    R = len(f["input_ids"])
    assert R > 450 and f["labels"].shape == (R, 64) and f["token_spans"].shape == (R, 64, 2)
    assert sorted(set(f["example_index"].tolist())) == list(range(400))
    assert (np.diff(f["example_index"]) >= 0).all()          # windows of an example in order
    assert f["label_weights"].dtype == np.float32 and (f["label_weights"][:, 0] == 0).all()
    assert (f["token_type_ids"] == 0).all()
    scored = (f["label_weights"] > 0) & (f["max_context"] > 0)
    decoded = decode(task, examples, f, np.eye(len(ner.label_names))[f["labels"]], {})
    checked = 0
    for i, e in enumerate(examples):
        text = "".join(e["chars"])
        rows = np.flatnonzero(f["example_index"] == i)
        for r in rows:
            n = int(f["attention_mask"][r].sum())
            assert (f["token_spans"][r, [0, n - 1]] == -1).all() and (f["token_spans"][r, n:] == -1).all()
        covered = [c for r in rows for s, t in f["token_spans"][r][scored[r]].tolist()
                   for c in range(s, t)]
        # The scored pieces cover every non-space character of the whole sentence, none twice.
        assert len(covered) == len(set(covered))
        assert {c for c, ch in enumerate(text) if not ch.isspace()} <= set(covered)
        gold = {(s, t, k) for k, s, t in bio_entities([task.label_names[t] for t in e["tags"]])}
        bounds = {b for s, t, _ in gold for b in (s, t)}
        spans = [tuple(x) for r in rows for x in f["token_spans"][r][scored[r]].tolist()]
        if any(s < b < t for s, t in spans for b in bounds):
            continue  # a piece crosses an entity boundary
        assert {(x["start"], x["end"], x["type"]) for x in decoded[i]["entities"]} == gold, text
        checked += len(rows) > 1
    assert checked > 40   # sentences read in several windows, read back exactly


def test_encode_ner_wordpiece():
    names = sources.NER_LABELS
    chars = list("Hello NEW York")
    tags = [0] * 6 + [1, 2, 2, 2, 2, 2, 2, 2]
    splits = {"dev": [{"chars": chars, "tags": tags}]}
    task = sources.TaskData("n", "token_classification", names, splits)
    f = encoding.encode_task(task, "dev", small_wordpiece(), 8)
    n = int(f["attention_mask"][0].sum())
    assert [names[t] for t in f["labels"][0, 1 : n - 1]] == ["O", "B-LOC", "I-LOC"]
    assert f["token_spans"][0, 1 : n - 1].tolist() == [[0, 5], [6, 9], [10, 14]]
    assert piece_entities(f, 0, names, "".join(chars)) == {(6, 14, "LOC")}


def piece_entities(features, i, names, text):
    """Entities of example i's piece labels, read back as the trainer reads predicted tags."""
    real = features["label_weights"][i] > 0
    tags = [names[t] for t in features["labels"][i][real]]
    found = entities_from_pieces(tags, features["token_spans"][i][real], text)
    return {(e["start"], e["end"], e["type"]) for e in found}
