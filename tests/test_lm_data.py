"""Tests of nlp_jax.data.lm: packed causal-LM rows, their stream per process, the n-gram baseline."""

import json

import ml_collections
import numpy as np
import pytest

from nlp_jax import data
from nlp_jax.data import corpora, lm

L = 64


def make_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        corpus="builtin", train_files="", tfds_name="", tfds_text_key="text", tokenizer_path="",
        tokenizer_model="unigram", vocab_size=1500, max_seq_len=L, heldout_fraction=0.1,
        split_seed=0, max_documents=30, num_threads=2, prefetch=4))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A small tokenizer trained on the first 30 built-in documents."""
    path = str(tmp_path_factory.mktemp("tok") / "spm.model")
    data.train_tokenizer([s for d in corpora.load_corpus(make_cfg())["train"] for s in d], 1500, path)
    return path


def build(tokenizer_path, *, batch_size=4, process_index=0, process_count=1, **overrides):
    return lm.build_lm_data(make_cfg(tokenizer_path=tokenizer_path, **overrides), workdir=None,
                            batch_size=batch_size, seed=0, num_eval_batches=2,
                            process_index=process_index, process_count=process_count)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


class Tok:
    """Stands in for a tokenizer where the token ids must be known: a sentence is its ids."""
    pad_id, cls_id, sep_id = 0, 2, 3

    def encode_batch(self, sentences):
        return [[int(t) for t in s.split()] for s in sentences]


def test_rows_label_the_next_token_and_stop_at_documents():
    # Documents: [CLS] 10 11 12 [SEP] | [CLS] 20 [SEP] | [CLS] 30 31 32 33 34 [SEP]; rows of 6.
    stream = lm.token_stream([["10 11", "12"], ["20"], ["30 31 32", "33 34"]], Tok())
    rows = lm.make_rows(stream, 6, pad_id=0)
    flat = {k: v.reshape(-1) for k, v in rows.items()}
    np.testing.assert_array_equal(
        flat["input_ids"], [2, 10, 11, 12, 3, 2, 20, 3, 2, 30, 31, 32, 33, 34, 3, 0, 0, 0])
    # Every label is the next token of the stream, also across the boundary of rows.
    n = len(stream)
    np.testing.assert_array_equal(flat["labels"][: n - 1], stream.tokens[1:])
    np.testing.assert_array_equal(flat["labels"][n - 1:], 0)
    # 0 where the next token is another document's [CLS] (at each [SEP]) and on padding.
    np.testing.assert_array_equal(
        flat["label_weights"], [1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    # Document numbers within each row, 0 on padding; positions restart per document and row.
    np.testing.assert_array_equal(
        rows["attention_mask"], [[1, 1, 1, 1, 1, 2], [1, 1, 2, 2, 2, 2], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(
        rows["position_ids"], [[0, 1, 2, 3, 4, 0], [0, 1, 0, 1, 2, 3], [0, 1, 2, 0, 0, 0]])


def test_built_rows_on_the_corpus_keep_documents_apart(tokenizer_path):
    d = build(tokenizer_path)
    batch = next(d.train_iter())
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "input_ids": ((4, L), "int32"), "labels": ((4, L), "int32"),
        "label_weights": ((4, L), "float32"), "attention_mask": ((4, L), "int32"),
        "position_ids": ((4, L), "int32")}
    ids, labels, w = batch["input_ids"], batch["labels"], batch["label_weights"]
    sep, cls = d.tokenizer.sep_id, d.tokenizer.cls_id
    # Within a row, a label is the next input; a weighted label never crosses [SEP] -> [CLS].
    np.testing.assert_array_equal(labels[:, :-1], ids[:, 1:])
    assert np.all(w[ids == sep] == 0) and np.all(w[labels == cls] == 0)
    assert np.all(w[(ids != sep) & (batch["attention_mask"] > 0)] == 1)
    # A new document number starts exactly at each [CLS] (or the row's first token).
    mask = batch["attention_mask"]
    starts = np.diff(mask, axis=1, prepend=0) > 0
    np.testing.assert_array_equal(starts[:, 1:], (ids == cls)[:, 1:] & (mask[:, 1:] > 0))
    assert np.all(batch["position_ids"][starts] == 0)
    # Concatenate and chunk: padding only at the very end of the stream.
    assert d.tokens_per_row > L - 1
    assert d.steps_per_epoch == -(-len(d.train) // L) // 4


def test_eval_batches_cover_the_heldout_split_once(tokenizer_path):
    d = build(tokenizer_path)
    every = d.eval_batches(0)
    weights = sum(b["label_weights"].sum() for b in every)
    assert weights == d.heldout_predictions == sum(len(x) - 1 for x in d.heldout.documents())
    fixed = d.eval_batches()
    assert len(fixed) == 2 and all(b["input_ids"].shape == (4, L) for b in fixed)
    for a, b in zip(fixed, d.eval_batches()):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_train_iterator_resumes_exactly(tokenizer_path):
    d = build(tokenizer_path)
    it = d.train_iter()
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # what the trainer checkpoints
    expected = take(it, 4)
    resumed = d.train_iter()
    resumed.set_state(state)
    for a, b in zip(take(resumed, 4), expected):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_process_shards_concatenate_to_the_global_batch(tokenizer_path):
    whole = take(build(tokenizer_path).train_iter(), 4)
    parts = [take(build(tokenizer_path, process_index=p, process_count=2).train_iter(), 4)
             for p in (0, 1)]
    evals = [build(tokenizer_path, process_index=p, process_count=2).eval_batches(0) for p in (0, 1)]
    for k in range(4):
        for name in whole[k]:
            assert parts[0][k][name].shape[0] == 2
            np.testing.assert_array_equal(
                np.concatenate([parts[0][k][name], parts[1][k][name]]), whole[k][name])
    for k, batch in enumerate(build(tokenizer_path).eval_batches(0)):
        np.testing.assert_array_equal(
            np.concatenate([evals[0][k]["input_ids"], evals[1][k]["input_ids"]]),
            batch["input_ids"])


# ----------------------------------------------------------------------------------------------
# n-gram baseline.


def test_kneser_ney_is_a_distribution_for_seen_and_unseen_contexts():
    rng = np.random.default_rng(0)
    docs = [[2, *rng.integers(5, 12, size=rng.integers(3, 15)), 3] for _ in range(40)]
    model = lm.KneserNey(docs, n=3, vocab_size=16)
    for context in ([2, 5], [7, 7], [15, 14]):  # seen, probably seen, never seen
        windows = np.array([[*context, w] for w in range(16)])
        p = model.probabilities(windows)
        assert np.all(p > 0)
        np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-9)


def test_ngram_perplexity_on_the_heldout_documents(tokenizer_path):
    d = build(tokenizer_path)
    train, heldout = d.train.documents(), d.heldout.documents()
    V = d.tokenizer.vocab_size
    result = lm.ngram_perplexity(train, heldout, n=3, vocab_size=V)
    assert result["tokens"] == d.heldout_predictions
    unigram = lm.ngram_perplexity(train, heldout, n=1, vocab_size=V)
    # Better than uniform; context helps on real text. (Memorised training text is easier still.)
    assert result["perplexity"] < unigram["perplexity"] < V
    assert lm.ngram_perplexity(train, train[:5], n=3, vocab_size=V)["perplexity"] < result["perplexity"]
