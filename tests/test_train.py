"""The training loop end to end: resume, user losses, run.py, and bad input."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import pretrain
from nlp_jax import losses
from nlp_jax.data import build_pretraining_data
from nlp_jax.train.checkpoint import IncompatibleCheckpointError, check_compatible
from nlp_jax.train.recipes.pretrain import Pretrain
from nlp_jax.train.trainer import train_and_evaluate
from nlp_jax.train.pretrained import load_workdir
from nlp_jax.train.step import model_inputs
from crash import Crash, crash_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = [  # a run small enough for a test: tiny model, few documents, short sequences
    "--config.data.max_documents=400", "--config.data.vocab_size=4000", "--config.data.max_seq_len=64",
    "--config.data.max_predictions=10", "--config.train.batch_size=8", "--config.train.eval_batches=2",
    "--config.mesh.data=1", "--config.train.progress_bar=False",
]


def quick_config(**train):
    c = pretrain.get_config("tiny")
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 400, 4000, 64
    c.data.max_predictions = 10
    c.train.batch_size, c.train.eval_batches, c.train.progress_bar = 8, 2, False
    c.train.warmup_steps = 2
    c.train.update(train)
    return c


def rows(workdir, split="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = quick_config(num_steps=8, log_every=1, eval_every=4, checkpoint_every=4)
    cfg.data.pack = True   # packed rows (the unpacked loader's resume: tests/test_data.py)
    train_and_evaluate(cfg, str(tmp_path / "straight"))

    with pytest.raises(Crash):  # dies after the step-4 checkpoint, two steps later
        train_and_evaluate(cfg, str(tmp_path / "resumed"), hooks=[crash_after(6)])
    train_and_evaluate(cfg, str(tmp_path / "resumed"))  # same command again: resumes from step 4

    straight, resumed = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(straight, resumed):
        assert a["loss"] == b["loss"], (a["step"], a["loss"], b["loss"])  # bitwise: same data, same keys
    assert rows(tmp_path / "straight", "eval") == rows(tmp_path / "resumed", "eval")

    # The saved model, loaded back for use, scores exactly what the run's last evaluation logged.
    model, tokenizer, saved_cfg = load_workdir(str(tmp_path / "straight"))
    data = build_pretraining_data(saved_cfg.data, workdir=str(tmp_path / "straight"), batch_size=8,
                                  seed=0, num_eval_batches=2)
    mlm = [float(losses.get("mlm")(model(**model_inputs(model, b)), b)[0])
           for b in data.eval_batches()]
    assert np.mean(mlm) == pytest.approx(rows(tmp_path / "straight", "eval")[-1]["mlm_loss"], rel=1e-5)
    # tokens_per_s counts every position, text_tokens_per_s the text of the (packed) rows.
    row = straight[-1]
    assert row["text_tokens_per_s"] / row["tokens_per_s"] == pytest.approx(
        data.text_tokens_per_row / 64)


def test_steps_per_execution_gives_the_losses_of_single_steps(tmp_path):
    calls = {}
    for k in (1, 8):   # 11 steps, evaluated at the end: no k > 1 divides them all
        cfg = quick_config(num_steps=11, log_every=4, eval_every=11, checkpoint_every=11,
                           steps_per_execution=k)
        train_and_evaluate(cfg, str(tmp_path / str(k)),
                           hooks=[lambda step, state, k=k: calls.setdefault(k, []).append(step)])
    # At most 8 per call and a divisor of log_every (4), and single steps where 4 more would pass
    # the last step: every call ends where a row is logged or a checkpoint saved.
    assert calls == {1: list(range(1, 12)), 8: [4, 8, 9, 10, 11]}
    single, scanned = rows(tmp_path / "1"), rows(tmp_path / "8")
    assert [r["step"] for r in scanned] == [4, 8, 11]
    for a, b in zip(single, scanned):   # same batches, dropout keys and updates
        for name in ("loss", "mlm_loss", "nsp_loss", "grad_norm", "learning_rate"):
            assert b[name] == pytest.approx(a[name], rel=1e-5), (a["step"], name)
    (a,), (b,) = rows(tmp_path / "1", "eval"), rows(tmp_path / "8", "eval")
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_gradient_clipping_scales_to_the_global_norm():
    """Global norm 13: clipped to 1 every leaf is divided by 13, as optax's rule; below the
    threshold the gradients pass through bit for bit."""
    import optax
    from nlp_jax.train import optim
    grads = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([[0.0, 12.0]], np.float32)}
    clipped, _ = optim.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(clipped["a"], [3 / 13, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [[0.0, 12 / 13]], rtol=1e-6)
    reference, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    for name in grads:
        np.testing.assert_allclose(clipped[name], reference[name], rtol=1e-6)
    unclipped, _ = optim.clip_by_global_norm(20.0).update(grads, optax.EmptyState())
    for name in grads:
        np.testing.assert_array_equal(unclipped[name], grads[name])


def test_a_loss_from_a_module_outside_nlp_jax_trains(tmp_path, monkeypatch):
    (tmp_path / "my_losses.py").write_text(textwrap.dedent("""
        import jax.numpy as jnp
        from nlp_jax.losses import register

        @register("pooled_l2")
        def pooled_l2(outputs, batch):
            value = jnp.mean(outputs["pooled_output"] ** 2)
            return value, {"pooled_norm": jnp.sqrt(value)}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = quick_config(num_steps=3, log_every=1)
    cfg.loss_modules = ("my_losses",)
    cfg.losses = {"mlm": 1.0, "pooled_l2": 0.5}
    train_and_evaluate(cfg, str(tmp_path / "run"))
    for r in rows(tmp_path / "run"):
        assert r["loss"] == pytest.approx(r["mlm_loss"] + 0.5 * r["pooled_l2_loss"], rel=1e-5)
        assert r["pooled_norm"] == pytest.approx(np.sqrt(r["pooled_l2_loss"]), rel=1e-4)
        assert "nsp_loss" not in r


def run_py(workdir, *args):
    cmd = [sys.executable, "run.py", "--config", "configs/pretrain.py:tiny", "--workdir", str(workdir),
           *QUICK, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XLA_FLAGS": ""})


def test_run_py_end_to_end(tmp_path):
    out = run_py(tmp_path, "--config.train.num_steps=6", "--config.train.log_every=3",
                 "--config.train.eval_every=6", "--config.train.checkpoint_every=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
    assert os.path.exists(tmp_path / "tokenizer" / "spm.model")
    assert os.listdir(tmp_path / "tensorboard")
    config = json.load(open(tmp_path / "config.json"))
    assert config["train"]["num_steps"] == 6 and config["model"]["size"] == "tiny"
    assert [r["step"] for r in rows(tmp_path)] == [3, 6]
    (ev,) = rows(tmp_path, "eval")
    assert {"loss", "masked_lm_accuracy", "next_sentence_accuracy"} <= set(ev)
    # Same command again: already finished, nothing retrained, the checkpoints untouched.
    again = run_py(tmp_path, "--config.train.num_steps=6")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["step"] for r in rows(tmp_path)] == [3, 6]


def _one_line_error(out):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--config.train.no_such_key=1"], "no_such_key"),
    (["--config.data.corpus=text", "--config.data.train_files=/nonexistent/*.txt"], "/nonexistent/*.txt"),
    (["--config.data.max_seq_len=4"], "max_seq_len"),
    (["--config.losses.no_such_loss=1.0"], "no_such_loss"),
])
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    line = _one_line_error(run_py(tmp_path / "run", *args))
    assert message in line, line


def test_only_a_position_table_bounds_max_seq_len():
    cfg = pretrain.get_config()
    cfg.data.max_seq_len = cfg.model.max_position_embeddings + 1
    with pytest.raises(ValueError, match="max_position_embeddings"):
        Pretrain.check_config(cfg)
    cfg.model.position_embedding = "rotary"
    Pretrain.check_config(cfg)


def test_bad_corpus_files_are_named(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait.\n".encode("latin-1"))
    line = _one_line_error(run_py(tmp_path / "run", "--config.data.corpus=text",
                                  f"--config.data.train_files={tmp_path}/latin1.txt"))
    assert "latin1.txt" in line and "UTF-8" in line, line
    (tmp_path / "empty.txt").write_text("\n\n")
    line = _one_line_error(run_py(tmp_path / "run2", "--config.data.corpus=text",
                                  f"--config.data.train_files={tmp_path}/empty.txt"))
    assert "empty.txt" in line or "no sentence" in line.lower(), line


def test_another_runs_checkpoint_is_refused_and_left_intact(tmp_path):
    assert run_py(tmp_path, "--config.train.num_steps=2").returncode == 0
    before = {f: os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path) for f in fs}
    line = _one_line_error(run_py(tmp_path, "--config.train.num_steps=4",
                                  "--config.model.num_layers=3"))
    assert "another run" in line and "--workdir" in line, line
    after = {f: os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path) for f in fs}
    assert after == before


def test_packing_is_part_of_what_a_checkpoint_must_match():
    unpacked = json.loads(pretrain.get_config().to_json_best_effort())
    packed, older = json.loads(json.dumps(unpacked)), json.loads(json.dumps(unpacked))
    packed["data"]["pack"] = True
    del older["data"]["pack"]          # saved before data.pack existed: an unpacked run
    check_compatible(older, unpacked, "runs/x")
    for saved in (unpacked, older):
        with pytest.raises(IncompatibleCheckpointError, match="data.pack: saved False, config True"):
            check_compatible(saved, packed, "runs/x")


def test_a_workdir_saved_before_a_model_key_existed_still_resumes():
    current = json.loads(pretrain.get_config().to_json_best_effort())
    older = json.loads(json.dumps(current))
    del older["model"]["electra"]      # saved before ELECTRA's keys were added
    check_compatible(older, current, "runs/x")
    deeper = json.loads(json.dumps(current))
    deeper["model"]["num_layers"] = 7
    with pytest.raises(IncompatibleCheckpointError, match="model"):
        check_compatible(older, deeper, "runs/x")


def test_workdir_defaults_to_runs_and_the_config_name():
    spec = importlib.util.spec_from_file_location("run", os.path.join(ROOT, "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    default_workdir = run.default_workdir
    assert default_workdir("configs/pretrain.py") == os.path.join("runs", "pretrain")
    assert default_workdir("configs/finetune_glue.py:mrpc") == os.path.join("runs", "finetune_glue-mrpc")


def test_a_recipe_from_a_module_outside_nlp_jax_trains_in_the_same_loop(tmp_path, monkeypatch):
    """A new kind of run is a recipe, a model and a loss: here linear regression on a stream of
    synthetic examples, registered by a user module and picked by config.recipe."""
    (tmp_path / "my_recipes.py").write_text(textwrap.dedent("""
        import grain
        import jax.numpy as jnp
        import numpy as np
        from flax import nnx
        from nlp_jax import parallel
        from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register

        W = np.array([1.0, -2.0, 0.5], np.float32)

        def example(i):
            x = np.random.default_rng(int(i)).normal(size=3).astype(np.float32)
            return {"x": x, "y": np.float32(x @ W)}

        class Linear(nnx.Module):
            input_keys = ("x",)

            def __init__(self, rngs):
                self.dense = nnx.Linear(3, 1, rngs=rngs)

            def __call__(self, x, dropout_rng=None):
                return {"y": self.dense(x)[:, 0]}

        def mse(outputs, batch):
            return jnp.mean((outputs["y"] - batch["y"]) ** 2), {}

        @register("regression")
        class Regression(Recipe):
            def __init__(self, config, workdir, mesh):
                ds = grain.MapDataset.range(10 ** 6).map(example).batch(config.train.batch_size)
                self.streams = {"main": Stream(iter(ds.to_iter_dataset()), mse, {}, {"rows": 1})}
                self.heldout = {k: np.stack([example(10 ** 7 + i)[k] for i in range(8)])
                                for k in ("x", "y")}
                self.mesh = mesh

            def model(self, rngs):
                return Linear(rngs)

            def evaluate(self, split, params, steps):
                m = steps["main"].evaluate(params, parallel.global_batch(self.heldout, self.mesh))
                return Evaluation(rows=[{"mse": float(m["loss"])}], score=-float(m["loss"]),
                                  summary=float(m["loss"]))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = quick_config(num_steps=200, log_every=50, eval_every=100, checkpoint_every=100,
                       learning_rate=0.1, warmup_steps=0, decay="linear", weight_decay=0.0)
    cfg.recipe, cfg.loss_modules = "regression", ("my_recipes",)
    final_mse = train_and_evaluate(cfg, str(tmp_path / "run"))
    evals = rows(tmp_path / "run", "eval")
    assert [r["step"] for r in evals] == [100, 200] and evals[-1]["mse"] == final_mse
    assert final_mse < 1e-3 and evals[0]["mse"] > final_mse    # it learnt W
    assert sorted(os.listdir(tmp_path / "run" / "best")) == ["200"]   # the better of the two
    assert "rows_per_s" in rows(tmp_path / "run")[-1]
