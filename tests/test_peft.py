"""Parameter-efficient fine-tuning: LoRA, adapters and BitFit start as the base model, train only
their own parameters (with optimiser state for those alone), and LoRA merges into the base."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import finetune_cls
from nlp_jax.models import peft
from nlp_jax.models.bert import BertConfig
from nlp_jax.models.heads import BertForTasks
from nlp_jax.predict import export_main, predict_lines
from nlp_jax.train import optim
from nlp_jax.train.checkpoint import Checkpointer, overlay
from nlp_jax.train.pretrained import load_encoder
from nlp_jax.train.trainer import train_and_evaluate
from crash import Crash, crash_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")
CFG = BertConfig.from_preset("tiny", vocab_size=60)
METHODS = {"lora": dict(lora_rank=4, lora_targets=peft.LORA_TARGETS), "adapter": dict(adapter_size=8),
           "bitfit": {}}
IDS = jnp.asarray(np.random.default_rng(0).integers(5, 60, (2, 12)))


def model_with(cfg, params=None, seed=1):
    model = BertForTasks(cfg, {"t": ("classification", 3)}, nnx.Rngs(seed))
    if params is not None:   # the base's weights, as init_from loads them
        graphdef, state = nnx.split(model)
        nnx.replace_by_pure_dict(state, overlay(nnx.to_pure_dict(state), params))
        model = nnx.merge(graphdef, state)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_every_method_starts_as_the_base_model(method):
    base = model_with(CFG, seed=0)
    tuned = model_with(dataclasses.replace(CFG, **METHODS[method]),
                       nnx.to_pure_dict(nnx.state(base)))
    np.testing.assert_array_equal(tuned(IDS, task="t")["logits"], base(IDS, task="t")["logits"])


def test_merged_lora_gives_the_same_logits():
    cfg = dataclasses.replace(CFG, **METHODS["lora"])
    model = model_with(cfg)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    # B is zero at initialisation: give every B values, so that the update is not zero.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.random.normal(jax.random.key(len(str(p))), x.shape) * 0.1
        if "lora_b" in str(p) else x, params)
    nnx.replace_by_pure_dict(state, params)
    lora_logits = nnx.merge(graphdef, state)(IDS, task="t")["logits"]
    merged = {**params, "bert": peft.merge_lora(params["bert"], cfg)}
    plain = model_with(CFG, merged)
    assert not np.allclose(lora_logits, model_with(CFG, params)(IDS, task="t")["logits"], atol=1e-3)
    np.testing.assert_allclose(plain(IDS, task="t")["logits"], lora_logits, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_training_moves_only_the_methods_parameters_and_keeps_optimizer_state_for_them(
        method, tmp_path):
    c = finetune_cls.get_config()
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    c.tasks.sentiment.max_examples = 24
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, learning_rate=1e-2,
                   progress_bar=False)
    c.peft.update(method=method, targets=peft.LORA_TARGETS, rank=2, adapter_size=4)
    final = {}
    train_and_evaluate(c, str(tmp_path), hooks=(lambda step, state: final.update(state),))
    params = jax.device_get(final["params"])
    base = jax.device_get(load_encoder(TINY_HF, c.model).params)
    trains = optim.trainable_mask(params, c.train, 2, method)
    moved = set()   # names of the base weights that changed
    for (path, x), t in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(trains)):
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        if keys[0] != "bert" or "peft" in keys or keys[1] == "pooler":
            continue   # a head or the method's own weights (the checkpoint has no pooler)
        start = base
        for k in keys[1:]:
            start = start[k]
        if not t:
            np.testing.assert_array_equal(x, start, err_msg=str(keys))   # bitwise unchanged
        elif not np.array_equal(x, start):
            moved.add(keys[-1])
    # LoRA moves no base weight; adapters and BitFit move LayerNorms (and BitFit the biases).
    assert moved == {"lora": set(), "adapter": {"bias", "scale"}, "bitfit": {"bias", "scale"}}[method]
    n_trainable = sum(x.size for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trains)) if t)
    # Adam's two moments cover exactly the trainable parameters (plus step counters).
    state_size = sum(x.size for x in jax.tree.leaves(final["opt_state"]))
    assert 2 * n_trainable <= state_size <= 2 * n_trainable + 8
    n_all = sum(x.size for x in jax.tree.leaves(params))
    assert n_trainable < 0.5 * n_all
    with open(tmp_path / "metrics.jsonl") as f:
        first = __import__("json").loads(f.readline())
    assert first["params"] == n_all and first["trainable_params"] == n_trainable
    assert first["opt_state_bytes"] == sum(np.asarray(x).nbytes
                                           for x in jax.tree.leaves(final["opt_state"]))
    # The checkpoints hold what the base does not give, here the trained part alone; resuming and
    # predicting read the base again from init_from.
    for directory in ("checkpoints", "best"):
        ckpt = Checkpointer(str(tmp_path / directory), read_only=True)
        stored = ckpt.manager.restore(ckpt.latest_step())["state"]["params"]
        ckpt.close()
        assert sum(np.size(x) for x in jax.tree.leaves(stored)) == n_trainable, directory
    # --mode export: LoRA folded into the base weights predicts as the LoRA workdir does.
    merged = str(tmp_path.parent / f"{tmp_path.name}-merged")
    if method != "lora":
        with pytest.raises(ValueError, match="no LoRA or AdaLoRA updates to merge"):
            export_main(str(tmp_path), merged)
        return
    export_main(str(tmp_path), merged)
    texts = ["hello world", "new york is big", "ok"]
    out_lora, out_merged = (list(predict_lines(w, texts)) for w in (str(tmp_path), merged))
    assert [o["label"] for o in out_merged] == [o["label"] for o in out_lora]
    assert [o["score"] for o in out_merged] == pytest.approx([o["score"] for o in out_lora],
                                                             abs=1e-5)
    with open(os.path.join(merged, "encoder.json")) as f:
        assert __import__("json").load(f)["lora_rank"] == 0   # a plain encoder now


def test_an_adalora_run_keeps_the_rank_budget_at_every_step(tmp_path):
    from nlp_jax.train import adalora   # pylint: disable=import-outside-toplevel
    c = finetune_cls.get_config()
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    c.tasks.sentiment.max_examples = 24
    # No warm-up: the first update already moves every singular value off its initial zero.
    c.train.update(batch_size=8, num_steps=6, log_every=1, warmup_steps=0, learning_rate=1e-2,
                   progress_bar=False)
    c.peft.update(method="adalora", targets=peft.LORA_TARGETS, rank=2, target_rank=1,
                  t_init=0.2, t_final=0.3, delta_t=1)
    train_and_evaluate(c, str(tmp_path))
    rows = [r for r in map(__import__("json").loads, open(tmp_path / "metrics.jsonl"))
            if r["split"] == "train"]
    matrices = 2 * len(peft.LORA_TARGETS)   # 2 layers
    expected = [int(adalora.budget(r["step"], 2 * matrices, matrices, 1, 1, 6)) for r in rows]
    assert [r["adalora_total_rank"] for r in rows] == expected
    assert expected[0] == 2 * matrices and expected[-1] == matrices
    assert all(r["orthogonality_loss"] > 0 for r in rows)


def test_a_lora_run_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    c = finetune_cls.get_config()
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    c.tasks.sentiment.max_examples = 24
    c.train.update(batch_size=8, num_steps=4, eval_every=2, log_every=1, warmup_steps=1,
                   learning_rate=1e-2, progress_bar=False)
    c.peft.update(method="lora", rank=2)
    straight = train_and_evaluate(c, str(tmp_path / "straight"))

    with pytest.raises(Crash):
        train_and_evaluate(c, str(tmp_path / "resumed"), hooks=[crash_after(3)])
    assert train_and_evaluate(c, str(tmp_path / "resumed")) == straight
    rows = lambda d: [{k: v for k, v in r.items() if not k.endswith("_per_s")}
                      for r in map(__import__("json").loads, open(tmp_path / d / "metrics.jsonl"))]
    assert rows("resumed") == rows("straight")


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_a_peft_step_is_the_same_on_a_data_fsdp_tensor_mesh(method):
    """LoRA's and AdaLoRA's weights carry logical axes too: sharded 2 x 2 x 2, the same step."""
    import ml_collections   # pylint: disable=import-outside-toplevel
    from nlp_jax import losses, parallel   # pylint: disable=import-outside-toplevel
    from nlp_jax.train.step import Regularizers, make_steps   # pylint: disable=import-outside-toplevel
    extra = dict(lora_rank=4) if method == "lora" else dict(adalora_rank=4)
    cfg = dataclasses.replace(CFG, num_heads=4, lora_targets=peft.LORA_TARGETS, **extra)
    train = finetune_cls.get_config().train
    train.update(num_steps=10, warmup_steps=0, learning_rate=1e-2)
    peft_cfg = finetune_cls.get_config().peft
    peft_cfg.update(method=method, rank=4, target_rank=2, t_init=0.0, t_final=0.5, delta_t=1)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 60, (8, 12)).astype(np.int32),
             "attention_mask": np.ones((8, 12), np.int32),
             "labels": rng.integers(0, 3, (8,)).astype(np.int32)}

    def run(shape, devices):
        mesh = parallel.make_mesh(ml_collections.ConfigDict(
            dict(zip(("data", "fsdp", "tensor"), shape))), devices=devices)
        steps = make_steps(lambda rngs: BertForTasks(cfg, {"t": ("classification", 3)}, rngs),
                           optim.make_optimizer(train, 2, peft_cfg),
                           losses.combined_loss({"classification": 1.0}), mesh,
                           parallel.rules_from_config({}), seed=0, model_kwargs={"task": "t"},
                           regularizers=Regularizers.from_config(train, peft_cfg))
        state, out = steps.init(), []
        for _ in range(3):
            state, metrics = steps.train(state, parallel.global_batch(batch, mesh))
            out.append(float(metrics["loss"]))
        return out, jax.device_get(state["params"])
    losses_1, params_1 = run((1, 1, 1), jax.devices()[:1])
    losses_8, params_8 = run((2, 2, 2), jax.devices())
    np.testing.assert_allclose(losses_8, losses_1, rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), params_8, params_1)
