"""The speed benchmark: its FLOP count against a hand count, and a run's figures agree."""
import math

import pytest

from nlp_jax import bench
from nlp_jax.models.bert import BertConfig


def test_flops_per_token_counts_every_matmul_weight():
    cfg = BertConfig.from_preset("tiny", vocab_size=1000)          # 2 layers, hidden 128, mlp 512
    h, i, v, seq, n_pred = 128, 512, 1000, 64, 10
    # Multiply-adds per token, forward: per layer q, k, v, attention output (4 h^2), the two
    # feed-forward matrices (2 h i), scores and values (2 seq h); the MLM head at n_pred of seq
    # tokens (h^2 transform + h v decoder); pooler h^2 and NSP 2h once per sequence.
    forward_macs = 2 * (4 * h * h + 2 * h * i + 2 * seq * h) + n_pred / seq * (h * h + h * v) \
        + (h * h + 2 * h) / seq
    assert math.isclose(bench.flops_per_token(cfg, seq, n_pred), 3 * 2 * forward_macs)


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_a_run_reports_consistent_figures(steps_per_execution):
    # Data parallel over however many devices the tests run with (conftest: 8 CPU devices).
    r = bench.main(["--model", "tiny", "--vocab", "1000", "--batch", "8", "--seq", "32",
                    "--mesh=-1,1,1", "--steps", "2", "--warmup", "1",
                    f"--steps_per_execution={steps_per_execution}"])
    assert r["steps_per_execution"] == steps_per_execution
    assert math.isclose(r["tokens_per_s"], 8 * 32 / r["step_s"], rel_tol=1e-2)   # step_s: 4 decimals
    assert math.isclose(r["mfu"], r["flops_per_token"] * r["tokens_per_s"] / r["peak_flops"],
                        rel_tol=1e-2)
    assert r["max_predictions"] == 5 and r["params"] > 0 and math.isfinite(r["loss"])
    assert r["page_faults_per_step"] >= 0 and r["peak_memory_bytes"] > 0


def test_lm_flops_per_token_counts_every_matmul_weight():
    cfg = BertConfig.from_preset("tiny", vocab_size=1000)
    h, i, v, seq = 128, 512, 1000, 64
    # Per token, forward: 2 layers of q, k, v, output, feed-forward, scores and values, and the
    # tied output projection at every position (each predicts its next token).
    forward_macs = 2 * (4 * h * h + 2 * h * i + 2 * seq * h) + h * v
    assert math.isclose(bench.lm_flops_per_token(cfg, seq), 3 * 2 * forward_macs)


def test_the_language_model_training_step_runs(monkeypatch):
    # The CPU peak is measured with large matmuls (most of a run's time here); any value will do.
    monkeypatch.setattr(bench, "peak_flops", lambda dtype: (1e12, "test"))
    r = bench.main(["--arch", "lm", "--model", "tiny", "--vocab", "500", "--batch", "8",
                    "--seq", "16", "--mesh=-1,1,1", "--steps", "1", "--warmup", "0"])
    assert r["arch"] == "lm" and r["params"] > 0 and math.isfinite(r["loss"])
    assert math.isclose(r["tokens_per_s"], 8 * 16 / r["step_s"], rel_tol=5e-2)  # 4 decimals


@pytest.mark.parametrize("beams", [1, 2])
def test_decoding_runs_and_makes_every_new_token(beams):
    r = bench.main(["--arch", "lm", "--decode", "--beams", str(beams), "--model", "tiny",
                    "--vocab", "500", "--batch", "2", "--prompt", "4", "--new", "3",
                    "--steps", "1", "--warmup", "0"])
    assert r["beams"] == beams and r["new_tokens"] == 2 * 3   # no EOS: every token is made
    assert math.isclose(r["new_tokens_per_s"], 2 * 3 / r["call_s"], rel_tol=1e-2)
