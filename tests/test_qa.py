"""Extractive QA: windowed rows and their targets, answers read back from logits, SQuAD files and
TFDS, and a run end to end whose logged scores, predictions and --mode predict agree."""
import json
import os

import ml_collections
import numpy as np
import pytest

from configs import finetune_qa
from nlp_jax import metrics
from nlp_jax.data import corpora, qa, sources
from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.predict import predict_lines
from nlp_jax.train.trainer import train_and_evaluate

WORDS = "the cat sat on mat . dog ran to park where did ?".split()
CONTEXT = "the cat sat on the mat . the dog ran to the park ."      # 14 words
QUESTION = "where did the dog ran ?"


def word_tokenizer():
    return WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])


def example(answer="the park", **kw):
    start = CONTEXT.index(answer) if answer and answer in CONTEXT else -1
    return {"id": "q", "question": QUESTION, "context": CONTEXT,
            "answers": [{"text": answer, "start": start}] if answer else [], **kw}


def encode(examples, L, stride, train=False):
    return qa.encode(examples, word_tokenizer(), L, doc_stride=stride, max_query_len=4,
                     train=train)


def test_rows_hold_the_question_then_a_window_of_the_context_with_the_answer_targets():
    tok = word_tokenizer()
    f = encode([example()], 12, 3)
    # 4 question pieces: windows of 12 - 4 - 3 = 5 pieces, 3 apart, over 14: [0,5) [3,8) [6,11)
    # [9,14). "the park" is pieces 11-12, whole only in the last window, at 11 - 9 + 6 = 8.
    assert f["example_index"].tolist() == [0, 0, 0, 0]
    assert f["start_positions"].tolist() == [0, 0, 0, 8]
    assert f["end_positions"].tolist() == [0, 0, 0, 9]
    q = tok.encode("where did the dog")
    words = CONTEXT.split()
    row = [tok.cls_id, *q, tok.sep_id, *tok.encode(" ".join(words[9:14])), tok.sep_id]
    assert f["input_ids"][3].tolist() == row
    assert f["token_type_ids"][3].tolist() == [0] * 6 + [1] * 6
    assert f["attention_mask"][3].tolist() == [1] * 12
    spans = f["token_spans"][3][6:11].tolist()
    assert [CONTEXT[s:t] for s, t in spans] == words[9:14]
    assert (f["token_spans"][3][:6] == -1).all() and (f["token_spans"][3][11] == -1).all()
    # Every context piece is scored in exactly one window.
    assert f["max_context"].sum() == 14


def test_training_leaves_out_questions_whose_answer_is_not_in_the_context():
    bad = example("a bird")           # start -1: an offset error in the file
    assert len(encode([bad, example()], 32, 8, train=True)["input_ids"]) == 1
    assert len(encode([bad, example()], 32, 8, train=False)["input_ids"]) == 2   # still scored
    unanswerable = encode([example(None)], 32, 8, train=True)   # SQuAD 2.0: trains on [CLS]
    assert unanswerable["start_positions"].tolist() == [0]


def oracle_logits(f, start_logit=5.0):
    """Logits that point at each row's target span (the gold answer where the row holds it)."""
    logits = np.zeros(f["input_ids"].shape + (2,), np.float32)
    for r, (s, e) in enumerate(zip(f["start_positions"], f["end_positions"])):
        if s:
            logits[r, s, 0], logits[r, e, 1] = start_logit, start_logit
    return logits


@pytest.mark.parametrize("L, stride", [(64, 8), (12, 3), (12, 1)])
def test_answers_merge_windows_as_one_window_would(L, stride):
    ex = example()
    f = encode([ex], L, stride)
    (out,) = qa.answers([ex], f, oracle_logits(f), no_answer=False)
    assert out["answer"] == "the park" and out["start"] == CONTEXT.index("the park")
    assert 0.5 < out["score"] <= 1.0


def test_no_answer_wins_only_where_the_task_has_unanswerable_questions():
    ex = example()
    f = encode([ex], 12, 3)
    logits = oracle_logits(f)
    logits[:, 0, :] = 6.0   # [CLS] scores 12 in every window, above the span's 10
    assert qa.answers([ex], f, logits, no_answer=True)[0] | {"score": 0} == {
        "answer": "", "start": -1, "score": 0}
    assert qa.answers([ex], f, logits, no_answer=False)[0]["answer"] == "the park"
    logits[3, 0, :] = 4.0   # the lowest [CLS] score over the windows is the null score: 8 < 10
    assert qa.answers([ex], f, logits, no_answer=True)[0]["answer"] == "the park"


def test_answers_respect_max_answer_len_and_the_order_of_start_and_end():
    ex = example()
    f = encode([ex], 64, 8)
    c = 6   # the context's first piece in the row
    logits = np.zeros(f["input_ids"].shape + (2,), np.float32)
    logits[0, c + 1, 0] = logits[0, c + 12, 1] = 5.0   # "cat ... park": 12 pieces
    logits[0, c + 4, 1] = 1.0                          # "cat sat on the": 4 pieces
    logits[0, c, 1] = 3.0                              # an end before the start: never taken
    best = lambda n: qa.answers([ex], f, logits, no_answer=False, max_answer_len=n)[0]["answer"]
    assert best(30) == "cat sat on the mat . the dog ran to the park"
    assert best(4) == "cat sat on the"


def test_squad_json_and_tfds_squad_read_the_same_examples(tmp_path):
    import tensorflow_datasets as tfds   # pylint: disable=import-outside-toplevel
    data = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "1", "question": QUESTION, "answers": [{"text": "the park", "answer_start": 40},
                                                       {"text": "park", "answer_start": 0}]},
        {"id": "2", "question": "who ?", "is_impossible": True, "answers": []}]}]}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    got = sources.read_squad_json(str(tmp_path / "train.json"))
    # An offset that misses its text moves to the nearest occurrence of the text.
    assert got == [{"id": "1", "question": QUESTION, "context": CONTEXT,
                    "answers": [{"text": "the park", "start": 40}, {"text": "park", "start": 44}]},
                   {"id": "2", "question": "who ?", "context": CONTEXT, "answers": []}]
    with tfds.testing.mock_data(num_examples=4):
        task = sources.load_task(ml_collections.ConfigDict(
            dict(source="tfds", tfds_name="squad", split_seed=0)))
        records = tfds.data_source("squad", split="validation")
        record = records[0]
    assert task.kind == sources.QUESTION_ANSWERING and len(task.splits["test"]) == 4
    first = task.splits["test"][0]
    text = lambda x: x.decode() if isinstance(x, bytes) else str(x)
    assert first["context"] == text(record["context"]) and first["id"] == text(record["id"])
    assert [a["text"] for a in first["answers"]] == [text(t) for t in record["answers"]["text"]]


def qa_files(tmp_path):
    """SQuAD-format files from the built-in People's Daily NER sentences: "which person / place /
    organisation does the sentence name?", the first such entity the answer."""
    questions = {"PER": "文中提到的人是谁？", "LOC": "文中提到的地方是哪里？", "ORG": "文中提到的机构是哪个？"}
    paragraphs = []
    for chars, tags in corpora.ner_splits(0)["dev"][:200]:
        text = "".join(chars)
        first = next((i for i, t in enumerate(tags) if t.startswith("B-")), None)
        if first is None:
            continue
        end = next((j for j in range(first + 1, len(tags)) if not tags[j].startswith("I-")),
                   len(tags))
        kind = tags[first][2:]
        paragraphs.append({"context": text, "qas": [{
            "id": str(len(paragraphs)), "question": questions[kind],
            "answers": [{"text": text[first:end], "answer_start": first}]}]})
    paths = {}
    for split, part in (("train", paragraphs[:48]), ("dev", paragraphs[48:64])):
        paths[split] = str(tmp_path / f"{split}.json")
        with open(paths[split], "w", encoding="utf-8") as f:
            json.dump({"data": [{"paragraphs": part}]}, f, ensure_ascii=False)
    return paths


def test_qa_files_train_in_windows_and_predict_agrees_with_the_logged_scores(tmp_path):
    paths = qa_files(tmp_path)
    c = finetune_qa.get_config("files")
    c.tasks.files.train_file, c.tasks.files.dev_file = paths["train"], paths["dev"]
    c.model.size, c.data.vocab_size, c.data.tokenizer_model = "tiny", 2000, "char"
    c.data.max_seq_len, c.data.doc_stride, c.data.max_query_len = 32, 8, 12   # windows
    c.train.update(batch_size=8, num_steps=12, eval_every=6, warmup_steps=2, learning_rate=1e-3,
                   progress_bar=False)
    workdir = str(tmp_path / "run")
    result = train_and_evaluate(c, workdir)
    with open(os.path.join(workdir, "tasks.json")) as f:
        info = json.load(f)["files"]
    assert info["chinese"] and not info["no_answer"]     # CMRC 2018's scoring, no "" answers
    with open(os.path.join(workdir, "predictions", "files_test.jsonl")) as f:
        preds = [json.loads(line) for line in f]
    dev = sources.read_squad_json(paths["dev"])
    assert len(preds) == len(dev) == 16 and all(p["answer"] for p in preds)
    for p, e in zip(preds, dev):   # a span of the context, at its offset
        assert e["context"][p["start"]:p["start"] + len(p["answer"])] == p["answer"]
    report = metrics.qa_report([p["answer"] for p in preds], [p["gold"] for p in preds], "zh")
    assert report == pytest.approx(result["files"])
    lines = [json.dumps({"question": e["question"], "context": e["context"]}, ensure_ascii=False)
             for e in dev]
    out = list(predict_lines(workdir, lines, batch_size=5))
    assert [(o["answer"], o["start"]) for o in out] == [(p["answer"], p["start"]) for p in preds]
    assert [o["score"] for o in out] == pytest.approx([p["score"] for p in preds], abs=1e-5)
