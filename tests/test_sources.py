"""Tests of nlp_jax.data.sources: built-in tasks, file readers and their errors, TFDS."""

import json

import ml_collections
import pytest

from nlp_jax.data import sources


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
    return sources.load_task(task_cfg(name="ner"))


# ----------------------------------------------------------------------------------------------
# Built-in sources.


def test_builtin_sentiment():
    task = sources.load_task(task_cfg(name="sentiment"))
    assert task.kind == "classification" and task.label_names == ("negative", "positive")
    sizes = {k: len(v) for k, v in task.splits.items()}
    n = sum(sizes.values())
    assert n > 10_000 and sizes["train"] == int(0.8 * n) and sizes["dev"] == int(0.1 * n)
    texts = [{e["text"] for e in task.splits[s]} for s in ("train", "dev", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert {e["label"] for e in task.splits["train"]} == {0, 1}
    small = sources.load_task(task_cfg(name="sentiment", max_examples=5))
    assert [len(v) for v in small.splits.values()] == [5, 5, 5]
    # A few-shot subset: seeded, drawn from the whole training split, dev and test untouched.
    few = [sources.load_task(task_cfg(name="sentiment", train_examples=100))
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
        sources.load_task(task_cfg(name="pos"))
    with pytest.raises(ValueError, match="source='web' is unknown"):
        sources.load_task(task_cfg(source="web"))


# ----------------------------------------------------------------------------------------------
# Files.


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tsv_and_jsonl_readers(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\nok\tpos\n\n\n")
    dev = write(tmp_path / "dev.tsv", "fine\tpos\n")
    task = sources.load_task(task_cfg(name="mine", source="files", train_file=train, dev_file=dev))
    assert task.label_names == ("neg", "pos") and task.kind == "classification"
    assert task.splits["train"][0] == {"text": "good", "text_b": None, "label": 1}
    assert task.splits["test"] == task.splits["dev"]
    assert task.splits["dev"] == [{"text": "fine", "text_b": None, "label": 1}]

    pairs = write(tmp_path / "pairs.tsv", "".join(f"a{i}\tb{i}\t{i % 2}\n" for i in range(20)))
    task = sources.load_task(task_cfg(source="files", train_file=pairs, label_names=("0", "1")))
    assert len(task.splits["train"]) == 18 and len(task.splits["dev"]) == 2  # seeded 10%
    assert all(e["text_b"] == "b" + e["text"][1:] for e in task.splits["train"])

    lines = [{"text": "x", "label": "neg"}, {"text": "y", "text_b": "z", "label": "pos"}]
    jl = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    task = sources.load_task(task_cfg(source="files", file_format="jsonl", train_file=jl,
                                      dev_file=jl, test_file=jl))
    assert task.splits["test"][1] == {"text": "y", "text_b": "z", "label": 1}
    ints = write(tmp_path / "i.jsonl", '{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n')
    task = sources.load_task(task_cfg(source="files", file_format="jsonl", train_file=ints,
                                      dev_file=ints, label_names=("no", "yes")))
    assert [e["label"] for e in task.splits["train"]] == [1, 0]


def test_ner_readers(tmp_path):
    conll = write(tmp_path / "t.conll", "江泽民\tB-PER\n说\tO\n\n\n北\tB-LOC\n京\tI-LOC\n\n")
    task = sources.load_task(task_cfg(source="files", file_format="conll", train_file=conll,
                                      dev_file=conll))
    assert task.kind == "token_classification"
    assert task.label_names == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    first = task.splits["train"][0]
    assert first["chars"] == list("江泽民说")
    assert [task.label_names[t] for t in first["tags"]] == ["B-PER", "I-PER", "I-PER", "O"]
    assert len(task.splits["train"]) == 2
    record = {"tokens": ["New", "York"], "tags": ["B-LOC", "I-LOC"]}
    jl = write(tmp_path / "n.jsonl", json.dumps(record))
    task = sources.load_task(task_cfg(source="files", file_format="jsonl", train_file=jl,
                                      dev_file=jl, label_names=sources.NER_LABELS))
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
        sources.load_task(cfg)
    assert "\n" not in str(e.value)


def test_file_errors_config(tmp_path):
    train = write(tmp_path / "train.tsv", "a\tpos\nb\tneg\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: label 'neg' is not in task.label_names"):
        sources.load_task(task_cfg(source="files", train_file=train, label_names=("pos",)))
    with pytest.raises(FileNotFoundError, match="task.dev_file"):
        sources.load_task(task_cfg(source="files", train_file=train, dev_file=str(tmp_path / "no")))


@pytest.mark.parametrize("fmt, content", [("tsv", ""), ("tsv", "text\tlabel\n"), ("jsonl", "\n"),
                                          ("conll", "\n\n")],
                         ids=["tsv", "tsv-header-only", "jsonl-blank-line", "conll-blank-lines"])
@pytest.mark.parametrize("split", ["dev", "test"])
def test_empty_dev_or_test_file(tmp_path, fmt, content, split):
    train = write(tmp_path / f"train.{fmt}", "a\tO\n" if fmt == "conll" else
                  '{"text": "a", "label": "p"}\n' if fmt == "jsonl" else "a\tp\n")
    empty = write(tmp_path / f"{split}.{fmt}", content)
    cfg = task_cfg(source="files", file_format=fmt, train_file=train, **{f"{split}_file": empty})
    with pytest.raises(ValueError, match=rf"{split}.{fmt}: the {split} split has no examples; "
                                         rf"point task.{split}_file at a non-empty file"):
        sources.load_task(cfg)


def test_too_few_training_examples_for_a_dev_split(tmp_path):
    train = write(tmp_path / "train.tsv", "a\tpos\n")
    with pytest.raises(ValueError, match=r"train.tsv: the dev split has no examples; one training"):
        sources.load_task(task_cfg(source="files", train_file=train))
    # With a dev file, one training example is enough.
    task = sources.load_task(task_cfg(source="files", train_file=train, dev_file=train))
    assert [len(task.splits[s]) for s in ("train", "dev", "test")] == [1, 1, 1]


def test_empty_split_of_a_source(monkeypatch):
    def no_test_split(seed):
        return {"train": [("好", 1)], "dev": [("差", 0)], "test": []}

    monkeypatch.setattr(sources.corpora, "sentiment_splits", no_test_split)
    with pytest.raises(ValueError, match=r"task 'sentiment' \(builtin\): the test split has no"):
        sources.load_task(task_cfg(name="sentiment"))


# ----------------------------------------------------------------------------------------------
# TFDS (offline: mock_data).


@pytest.mark.parametrize("name, pair, test_size", [
    ("glue/sst2", False, 7), ("glue/mrpc", True, 7), ("imdb_reviews", False, 7)])
def test_tfds_mock(name, pair, test_size):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=test_size):
        task = sources.load_task(task_cfg(name=name, source="tfds", tfds_name=name))
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
            sources.load_task(task_cfg(source="tfds", tfds_name="no_such_dataset"))
