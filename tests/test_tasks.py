"""Tests of nlp_jax.data.tasks: task loading, encoding with offsets, readers, TFDS, loaders."""

import json
import logging
import random
import unicodedata

import ml_collections
import numpy as np
import pytest

from nlp_jax.data import corpora, tasks
from nlp_jax.data import tokenizer as tokenizer_lib
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.metrics import bio_entities
from nlp_jax.train.finetune import entities_from_pieces


def task_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(
        dict(name="sentiment", source="builtin", tfds_name="", text_key="", text_b_key="",
             label_key="", train_file="", dev_file="", test_file="", file_format="tsv",
             label_names=(), split_seed=0, max_examples=0)
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def ner():
    return tasks.load_task(task_cfg(name="ner"))


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
# Built-in tasks.


def test_builtin_sentiment():
    task = tasks.load_task(task_cfg(name="sentiment"))
    assert task.kind == "classification" and task.label_names == ("negative", "positive")
    sizes = {k: len(v) for k, v in task.splits.items()}
    n = sum(sizes.values())
    assert n > 10_000 and sizes["train"] == int(0.8 * n) and sizes["dev"] == int(0.1 * n)
    texts = [{e["text"] for e in task.splits[s]} for s in ("train", "dev", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert {e["label"] for e in task.splits["train"]} == {0, 1}
    small = tasks.load_task(task_cfg(name="sentiment", max_examples=5))
    assert [len(v) for v in small.splits.values()] == [5, 5, 5]
    # A few-shot subset: seeded, drawn from the whole training split, dev and test untouched.
    few = [tasks.load_task(task_cfg(name="sentiment", train_examples=100))
           for _ in range(2)]
    assert [len(v) for v in few[0].splits.values()] == [100, sizes["dev"], sizes["test"]]
    assert few[0].splits["dev"] == task.splits["dev"]
    subset = [e["text"] for e in few[0].splits["train"]]
    assert subset == [e["text"] for e in few[1].splits["train"]]
    assert set(subset) <= texts[0] and subset != [e["text"] for e in task.splits["train"][:100]]
    assert 20 < sum(e["label"] for e in few[0].splits["train"]) < 80


def test_builtin_ner(ner):
    assert ner.kind == "token_classification"
    assert ner.label_names == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    assert sum(map(len, ner.splits.values())) > 15_000
    names = ner.label_names
    found = 0
    for e in (e for split in ner.splits.values() for e in split):
        assert len(e["chars"]) == len(e["tags"])
        text = "".join(e["chars"])
        i = text.find("江泽民")
        if i >= 0:
            assert [names[t] for t in e["tags"][i : i + 3]] == ["B-PER", "I-PER", "I-PER"], text
            found += 1
    assert found > 10
    with pytest.raises(ValueError, match="not a built-in task"):
        tasks.load_task(task_cfg(name="pos"))
    with pytest.raises(ValueError, match="source='web' is unknown"):
        tasks.load_task(task_cfg(source="web"))


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
    task = tasks.TaskData("t", "classification", ("a", "b"), {"train": examples})
    with caplog.at_level(logging.WARNING):
        f = tasks.encode_task(task, "train", spm_tok, 16)
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


def test_piece_labels_rules():
    names = tasks.NER_LABELS
    tags = [0, 5, 6, 6, 0]  # "x江泽民y"
    # A piece starting at O takes the entity start: the next piece inside the entity becomes B-PER.
    assert tasks._piece_labels([(0, 2), (2, 4), (4, 5)], tags, names) == [0, 5, 0]
    assert tasks._piece_labels([(0, 1), (1, 3), (3, 4), (4, 4), (4, 5)], tags, names) == [
        0, 5, 6, 0, 0]


def test_encode_ner_alignment(ner, spm_tok):
    task = tasks.TaskData("ner", ner.kind, ner.label_names, {"test": ner.splits["test"][:400]})
    f = tasks.encode_task(task, "test", spm_tok, 128)
    assert f["labels"].shape == (400, 128) and f["token_spans"].shape == (400, 128, 2)
    assert f["label_weights"].dtype == np.float32 and (f["label_weights"][:, 0] == 0).all()
    assert (f["token_type_ids"] == 0).all()
    checked = 0
    for i, e in enumerate(task.splits["test"]):
        n = int(f["attention_mask"][i].sum())
        spans = f["token_spans"][i]
        assert (spans[0] == -1).all() and (spans[n - 1] == -1).all() and (spans[n:] == -1).all()
        assert (f["label_weights"][i, n - 1 :] == 0).all()
        if n == 128:
            continue  # truncated
        text = "".join(e["chars"])
        real = [tuple(s) for s in spans[1 : n - 1].tolist() if s[0] < s[1]]
        # Pieces cover every non-space character, and none twice.
        covered = [c for s, t in real for c in range(s, t)]
        assert len(covered) == len(set(covered))
        assert {c for c, ch in enumerate(text) if not ch.isspace()} <= set(covered)
        gold = {(s, t, k) for k, s, t in bio_entities([task.label_names[t] for t in e["tags"]])}
        bounds = {b for s, t, _ in gold for b in (s, t)}
        if any(s < b < t for s, t in real for b in bounds):
            continue  # a piece crosses an entity boundary
        assert piece_entities(f, i, task.label_names, text) == gold, text
        checked += 1
    assert checked > 250


def test_encode_ner_wordpiece():
    names = tasks.NER_LABELS
    chars = list("Hello NEW York")
    tags = [0] * 6 + [1, 2, 2, 2, 2, 2, 2, 2]
    splits = {"dev": [{"chars": chars, "tags": tags}]}
    task = tasks.TaskData("n", "token_classification", names, splits)
    f = tasks.encode_task(task, "dev", small_wordpiece(), 8)
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


# ----------------------------------------------------------------------------------------------
# Files.


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tsv_and_jsonl_readers(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\nok\tpos\n\n\n")
    dev = write(tmp_path / "dev.tsv", "fine\tpos\n")
    task = tasks.load_task(task_cfg(name="mine", source="files", train_file=train, dev_file=dev))
    assert task.label_names == ("neg", "pos") and task.kind == "classification"
    assert task.splits["train"][0] == {"text": "good", "text_b": None, "label": 1}
    assert task.splits["test"] == task.splits["dev"]
    assert task.splits["dev"] == [{"text": "fine", "text_b": None, "label": 1}]

    pairs = write(tmp_path / "pairs.tsv", "".join(f"a{i}\tb{i}\t{i % 2}\n" for i in range(20)))
    task = tasks.load_task(task_cfg(source="files", train_file=pairs, label_names=("0", "1")))
    assert len(task.splits["train"]) == 18 and len(task.splits["dev"]) == 2  # seeded 10%
    assert all(e["text_b"] == "b" + e["text"][1:] for e in task.splits["train"])

    lines = [{"text": "x", "label": "neg"}, {"text": "y", "text_b": "z", "label": "pos"}]
    jl = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    task = tasks.load_task(task_cfg(source="files", file_format="jsonl", train_file=jl,
                                    dev_file=jl, test_file=jl))
    assert task.splits["test"][1] == {"text": "y", "text_b": "z", "label": 1}
    ints = write(tmp_path / "i.jsonl", '{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n')
    task = tasks.load_task(task_cfg(source="files", file_format="jsonl", train_file=ints,
                                    dev_file=ints, label_names=("no", "yes")))
    assert [e["label"] for e in task.splits["train"]] == [1, 0]


def test_ner_readers(tmp_path):
    conll = write(tmp_path / "t.conll", "江泽民\tB-PER\n说\tO\n\n\n北\tB-LOC\n京\tI-LOC\n\n")
    task = tasks.load_task(task_cfg(source="files", file_format="conll", train_file=conll,
                                    dev_file=conll))
    assert task.kind == "token_classification"
    assert task.label_names == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    first = task.splits["train"][0]
    assert first["chars"] == list("江泽民说")
    assert [task.label_names[t] for t in first["tags"]] == ["B-PER", "I-PER", "I-PER", "O"]
    assert len(task.splits["train"]) == 2
    record = {"tokens": ["New", "York"], "tags": ["B-LOC", "I-LOC"]}
    jl = write(tmp_path / "n.jsonl", json.dumps(record))
    task = tasks.load_task(task_cfg(source="files", file_format="jsonl", train_file=jl, dev_file=jl,
                                    label_names=tasks.NER_LABELS))
    assert task.splits["dev"][0]["chars"] == list("NewYork")
    assert task.splits["dev"][0]["tags"] == [1] + [2] * 6


@pytest.mark.parametrize(
    "fmt, train, dev, match",
    [
        ("tsv", "a\tpos\nb\tx\ty\tpos\n", None, r"train.*:2: 4 tab-separated columns"),
        ("tsv", "a\tpos\nb\tneg\n", "c\tmaybe\n", r"dev.*:1: label 'maybe' is not in"),
        ("tsv", "a\tpos\n\nb\tneg\n", None, r"train.*:2: empty line"),
        ("tsv", "a\tpos\n\tneg\n", None, r"train.*:2: empty text"),
        ("jsonl", '{"text": "a", "label": "p"}\n{"text": "b", "label": \n', None,
         r"train.*:2: invalid JSON"),
        ("jsonl", '{"text": "a", "label": "p"}\n\n{"text": "b", "label": "p"}\n', None,
         r"train.*:2: empty line"),
        ("jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', None,
         r"train.*:1: 2 tokens but 1 tags"),
        ("conll", "a\tO\nb\n", None, r"train.*:2: 1 tab-separated columns"),
        ("conll", "a\tO\n\nb\tB-PER\n", "c\tB-XYZ\n", r"dev.*:1: label 'B-XYZ' is not in"),
    ],
)
def test_file_errors(tmp_path, fmt, train, dev, match):
    train_file = write(tmp_path / f"train.{fmt}", train)
    cfg = task_cfg(source="files", file_format=fmt, train_file=train_file)
    if dev is not None:
        cfg.dev_file = write(tmp_path / f"dev.{fmt}", dev)
    with pytest.raises(ValueError, match=match) as e:
        tasks.load_task(cfg)
    assert "\n" not in str(e.value)


def test_file_errors_config(tmp_path):
    train = write(tmp_path / "train.tsv", "a\tpos\nb\tneg\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: label 'neg' is not in task.label_names"):
        tasks.load_task(task_cfg(source="files", train_file=train, label_names=("pos",)))
    with pytest.raises(FileNotFoundError, match="task.dev_file"):
        tasks.load_task(task_cfg(source="files", train_file=train, dev_file=str(tmp_path / "no")))


# ----------------------------------------------------------------------------------------------
# TFDS (offline: mock_data).


@pytest.mark.parametrize("name, pair, test_size", [
    ("glue/sst2", False, 7), ("glue/mrpc", True, 7), ("imdb_reviews", False, 7)])
def test_tfds_mock(name, pair, test_size):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=test_size):
        task = tasks.load_task(task_cfg(name=name, source="tfds", tfds_name=name))
    # 7 train examples: round(0.35) -> at least one held out as dev.
    assert [len(task.splits[s]) for s in ("train", "dev", "test")] == [6, 1, test_size]
    expected = {"imdb_reviews": ("neg", "pos"), "glue/sst2": ("negative", "positive"),
                "glue/mrpc": ("not_equivalent", "equivalent")}
    assert task.label_names == expected[name]
    for e in (e for s in task.splits.values() for e in s):
        assert isinstance(e["text"], str) and e["label"] in (0, 1)
        assert (e["text_b"] is not None) == pair and (not pair or isinstance(e["text_b"], str))


def test_tfds_unknown_name():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(ValueError, match="tfds_name='no_such_dataset' is not a TFDS dataset"):
            tasks.load_task(task_cfg(source="tfds", tfds_name="no_such_dataset"))


# ----------------------------------------------------------------------------------------------
# Loaders.


def fake_features(n=23):
    return {"input_ids": np.arange(n * 3, dtype=np.int32).reshape(n, 3),
            "labels": np.arange(n, dtype=np.int32),
            "label_weights": np.ones((n, 3), np.float32)}


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_once(process_count):
    f = fake_features(23)
    seen, total_weight = [], 0.0
    per_process = [tasks.eval_batches(f, 8, p, process_count) for p in range(process_count)]
    assert len({len(b) for b in per_process}) == 1 and len(per_process[0]) == 3
    for k in range(3):
        for p in range(process_count):
            b = per_process[p][k]
            assert b["labels"].shape == (8 // process_count,)
            assert b["example_weights"].dtype == np.float32
            seen += b["labels"][b["example_weights"] > 0].tolist()
            total_weight += b["example_weights"].sum()
            assert (b["label_weights"][b["example_weights"] == 0] == 0).all()
    assert seen == list(range(23)) and total_weight == 23


def test_train_order_independent_of_process_count_and_resumable():
    f = fake_features(23)
    one = tasks.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    global_order = [next(one)["labels"].tolist() for _ in range(12)]  # > 2 epochs
    flat = [x for b in global_order for x in b]
    assert sorted(flat[:23]) != flat[:23] and sorted(flat[:23]) == list(range(23))  # shuffled
    assert flat[23:46] != flat[:23] and sorted(flat[23:46]) == list(range(23))  # reshuffled
    two = [tasks.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True,
                              process_index=p, process_count=2) for p in range(2)]
    for k in range(12):
        assert next(two[0])["labels"].tolist() + next(two[1])["labels"].tolist() == global_order[k]
    it = tasks.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    for _ in range(5):
        next(it)
    state = it.get_state()
    it2 = tasks.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    it2.set_state(state)
    assert [next(it2)["labels"].tolist() for _ in range(3)] == global_order[5:8]
    other_seed = tasks.task_batches(f, batch_size=4, seed=4, shuffle=True, drop_remainder=True)
    assert [next(other_seed)["labels"].tolist() for _ in range(3)] != global_order[:3]
    finite = tasks.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True,
                                num_epochs=1)
    assert len(list(finite)) == 5
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        tasks.task_batches(f, batch_size=4, seed=0, shuffle=True, drop_remainder=True,
                           process_count=3)


@pytest.mark.parametrize("token_level", [False, True])
def test_pack_features_keeps_every_example_once_in_few_rows(token_level):
    rng = np.random.default_rng(0)
    n, L = 200, 32
    lengths = rng.integers(3, L + 1, n)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    f = {"input_ids": np.where(mask, rng.integers(5, 1000, (n, L)), 0).astype(np.int32),
         "token_type_ids": (mask * (np.arange(L)[None] >= lengths[:, None] // 2)).astype(np.int32),
         "attention_mask": mask}
    if token_level:
        f["labels"] = (rng.integers(0, 5, (n, L)) * mask).astype(np.int32)
        f["label_weights"] = mask.astype(np.float32)
        f["token_spans"] = np.zeros((n, L, 2), np.int32)
    else:
        f["labels"] = rng.integers(0, 3, n).astype(np.int32)
    p = tasks.pack_features(f, pad_id=0, max_per_row=4)
    seen = []
    for r in range(len(p["input_ids"])):
        seg = p["attention_mask"][r]
        assert 1 <= seg.max() <= 4 and (np.diff(seg[seg > 0]) >= 0).all()  # contiguous examples
        for slot in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == slot)
            ids = p["input_ids"][r, where]
            # Find the example by its tokens; positions restart at 0; types travel along.
            (i,) = [i for i in range(n) if lengths[i] == len(where)
                    and (f["input_ids"][i, :len(where)] == ids).all()]
            seen.append(i)
            assert p["position_ids"][r, where].tolist() == list(range(len(where)))
            np.testing.assert_array_equal(p["token_type_ids"][r, where], f["token_type_ids"][i, :len(where)])
            if token_level:
                np.testing.assert_array_equal(p["labels"][r, where], f["labels"][i, :len(where)])
                np.testing.assert_array_equal(p["label_weights"][r, where], 1.0)
            else:
                assert p["cls_positions"][r, slot - 1] == where[0]
                assert p["labels"][r, slot - 1] == f["labels"][i]
                assert p["label_weights"][r, slot - 1] == 1.0
        if not token_level:
            assert p["label_weights"][r, seg.max():].sum() == 0       # empty slots weigh nothing
    assert sorted(seen) == list(range(n))
    # Best-fit decreasing leaves little room: close to the token count's lower bound.
    assert len(p["input_ids"]) <= 1.1 * np.ceil(lengths.sum() / L) + 1
    assert "token_spans" not in p
