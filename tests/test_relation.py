"""Relation extraction: typed entity markers, the entity-start positions, TACRED's micro F1, and a
run from files through predict."""
import json
import os

import numpy as np
import pytest

from configs import finetune_re
from nlp_jax.data import encoding, sources
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.metrics import relation_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")


def test_typed_markers_go_around_each_entity_in_either_order():
    text = "张三在北京工作。"
    marked, h, t = encoding.mark_entities(text, {"start": 0, "end": 2, "type": "PER"},
                                          {"start": 3, "end": 5, "type": "LOC"})
    assert marked == "@ * PER * 张三 @在# ^ LOC ^ 北京 #工作。"
    assert (marked[h], marked[t]) == ("@", "#") and h == 0 and t == marked.index("#")
    # Tail first, untyped, touching: the closing marker comes before the next opening one.
    marked, h, t = encoding.mark_entities("北京张三", {"start": 2, "end": 4, "type": None},
                                          {"start": 0, "end": 2})
    assert marked == "# 北京 #@ 张三 @" and (marked[h], marked[t]) == ("@", "#")


def test_entity_positions_point_at_the_opening_markers():
    tokenizer = WordPieceTokenizer.load(TINY_HF)
    examples = [{"text": "张三在北京工作。", "head": {"start": 0, "end": 2, "type": "PER"},
                 "tail": {"start": 3, "end": 5, "type": "LOC"}, "label": 1},
                {"text": "他说北京很大。" * 3, "head": {"start": 2, "end": 4, "type": None},
                 "tail": {"start": 16, "end": 18, "type": None}, "label": 0}]
    task = sources.TaskData("re", sources.RELATION, ("none", "in"), {"test": examples})
    feats = encoding.encode_task(task, "test", tokenizer, 16)
    for i, e in enumerate(examples):
        marked, h, t = encoding.mark_entities(e["text"], e["head"], e["tail"])
        _, spans = tokenizer.encode_with_offsets(marked)
        for position, char in zip(feats["entity_positions"][i], (h, t)):
            if position:   # 0: cut off by truncation, [CLS] stands in
                assert spans[position - 1][0] == char
    assert feats["entity_positions"][0].tolist() != [0, 0]
    assert feats["entity_positions"][1][1] == 0       # the tail's marker is past 16 tokens
    np.testing.assert_array_equal(feats["labels"], [1, 0])


def test_micro_f1_leaves_out_the_negative_label():
    names = ["no_relation", "works_in", "born_in"]
    # Predicted relations (not no_relation): examples 0, 1, 3, of which 0 is right -> P = 1/3;
    # gold relations: examples 0, 2, 3, of which 0 is found -> R = 1/3.
    report = relation_report([1, 0, 2, 1], [1, 1, 0, 2], names, "no_relation")
    assert report["micro_precision"] == pytest.approx(1 / 3)
    assert report["micro_recall"] == pytest.approx(1 / 3)
    assert report["micro_f1"] == pytest.approx(1 / 3)
    assert report["accuracy"] == pytest.approx(1 / 4)
    assert relation_report([1, 0], [1, 1], names)["micro_f1"] == pytest.approx(0.5)  # = accuracy


def write_jsonl(path, n, offset=0):
    people, places = ["张三", "李四", "王五"], ["北京", "上海", "广州"]
    with open(path, "w") as f:
        for i in range(offset, offset + n):
            p, q = people[i % 3], places[i % 3]
            text, relation = (f"{p}在{q}工作。", "works_in") if i % 2 else (f"{p}说{q}很大。", "no_relation")
            f.write(json.dumps({"text": text, "head": {"start": 0, "end": 2, "type": "PER"},
                                "tail": {"start": 3, "end": 5, "type": "LOC"},
                                "relation": relation}, ensure_ascii=False) + "\n")


def test_relation_extraction_from_files_trains_scores_and_predicts(tmp_path):
    from nlp_jax.predict import predict_lines
    from nlp_jax.train.trainer import train_and_evaluate
    for split, n, offset in (("train", 16, 0), ("dev", 6, 16), ("test", 6, 22)):
        write_jsonl(tmp_path / f"{split}.jsonl", n, offset)
    c = finetune_re.get_config("files")
    for split in ("train", "dev", "test"):
        c.tasks.files[f"{split}_file"] = str(tmp_path / f"{split}.jsonl")
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    c.train.batch_size, c.train.num_steps, c.train.progress_bar = 8, 3, False
    result = train_and_evaluate(c, str(tmp_path / "run"))["files"]
    assert {"micro_f1", "micro_precision", "micro_recall", "accuracy", "mcc"} <= set(result)
    preds = [json.loads(line) for line in open(tmp_path / "run" / "predictions" / "files_test.jsonl")]
    gold = [1 if p["gold"] == "works_in" else 0 for p in preds]
    pred = [1 if p["label"] == "works_in" else 0 for p in preds]
    correct = sum(g == p == 1 for g, p in zip(gold, pred))
    assert result["micro_recall"] == pytest.approx(correct / sum(gold))
    lines = [json.dumps({"text": "李四在上海工作。", "head": {"start": 0, "end": 2},
                         "tail": {"start": 3, "end": 5}}, ensure_ascii=False)]
    (out,) = predict_lines(str(tmp_path / "run"), lines)
    assert out["label"] in ("no_relation", "works_in") and 0.5 <= out["score"] <= 1
    bad = json.dumps({"text": "李四", "head": {"start": 0, "end": 2}, "tail": {"start": 1, "end": 9}})
    with pytest.raises(ValueError, match="input line 1: tail span"):
        list(predict_lines(str(tmp_path / "run"), [bad]))
