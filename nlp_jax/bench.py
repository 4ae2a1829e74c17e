r"""Throughput benchmark of the real BERT pretraining step (MLM + NSP, backward, AdamW), of the
language model's training step (`--arch lm`: next-token loss, backward, AdamW), and of decoding
(`--arch lm --decode`: `decoding.generate`, greedy or beam search, with its key/value cache).

    python -m nlp_jax.bench --model base --batch 8 --seq 128 --steps 5
    python -m nlp_jax.bench --model mini --vocab 8000 --batch 32
    python -m nlp_jax.bench --arch lm --model base --vocab 50257 --batch 4 --seq 512
    python -m nlp_jax.bench --arch lm --decode --beams 4 --prompt 32 --new 64 --batch 16

Builds the step exactly as the trainer does (make_steps + make_optimizer + combined_loss), feeds
random token ids of fixed shape, compiles once, times `--steps` steps after `--warmup`, and prints
one JSON line. `step_s` is the median step time (each step waited for; with
`--steps_per_execution K`, each call of K steps, divided by K); `tokens_per_s` = batch * seq /
step_s.

Model FLOPs per token (`flops_per_token`): useful work only, fwd + bwd = 3x the forward, and a
forward matmul costs 2 FLOPs per weight it touches, so 6 * (matmul weights touched per token):
  * encoder, per layer: qkv 3h^2 + attention output h^2 + feed-forward 2*h*i (i = 4h: 8h^2);
  * attention scores QK^T and values AV: 2 * seq * h multiply-adds per token per layer, i.e.
    6 * 2 * seq * h FLOPs per token per layer (fwd + bwd; padding-free, no causal halving);
  * MLM head (transform h^2 + tied vocabulary projection h*vocab) only at the `max_predictions`
    masked positions: weighted by max_predictions / seq;
  * pooler h^2 and NSP head 2h once per sequence: weighted by 1 / seq;
  * embedding lookups are gathers, not matmuls, and count zero; so do LayerNorm, GELU, softmax,
    dropout, biases and the optimizer update (elementwise work, not "useful" FLOPs).
`mfu` = flops_per_token * tokens_per_s / peak_flops. `peak_flops`: on CPU, measured in this run as
the fastest of several square matmuls (n = 1024, 2048, 4096; the smallest, whose operands fit the
caches, can be the fastest, so a single large size would understate the peak and flatter the MFU;
see docs/performance.md) in the compute dtype; on GPU/TPU, the datasheet dense peak for the device
kind (PEAK_FLOPS below) times the device count.

The language model (`--arch lm`, `lm_flops_per_token`) counts the same per layer, and the tied
output projection h*vocab at every position (each predicts the next token); no pooler or NSP.
Its batch is random ids with their next tokens as labels, every position weighted.

Decoding (`--decode`) times whole `generate` calls (prompt prefill and every new token; no EOS,
so each call makes exactly `--new` tokens per sequence, as the Hugging Face anchor does with
min_new_tokens) after one compiling call, and prints `new_tokens_per_s` = batch * new / call_s
(`call_s`: the median call); `--beams 1` is greedy search, K > 1 beam search with K beams.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from nlp_jax import allocator, losses, parallel
from nlp_jax.models import decoding
from nlp_jax.models.bert import BertConfig, BertForPreTraining
from nlp_jax.models.decoder import Decoder
from nlp_jax.train import optim
from nlp_jax.train.step import make_steps

# Dense peak FLOP/s per chip: (bfloat16, float32). GPU float32 matmuls run as TF32 under JAX's
# default precision, TPU float32 matmuls as bfloat16 passes, so those are the float32 figures.
PEAK_FLOPS = {  # lower-cased substring of device_kind -> (bf16, fp32); first match wins
    "h200": (989e12, 494e12), "h100": (989e12, 494e12), "a100": (312e12, 156e12),
    "v6 lite": (918e12, 918e12), "v6e": (918e12, 918e12), "v5p": (459e12, 459e12),
    "v5 lite": (197e12, 197e12), "v5e": (197e12, 197e12), "v4": (275e12, 275e12),
}

TRAIN = dict(learning_rate=1e-4, warmup_steps=10_000, num_steps=1_000_000, decay="linear",
             weight_decay=0.01, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0)


def flops_per_token(cfg: BertConfig, seq: int, max_predictions: int) -> float:
    """Useful training FLOPs per token; see the module docstring."""
    h, i, v, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    encoder = n * (4 * h * h + 2 * h * i)
    heads = max_predictions / seq * (h * h + h * v) + (h * h + 2 * h) / seq
    return 6 * (encoder + heads) + n * 6 * 2 * seq * h


def lm_flops_per_token(cfg: BertConfig, seq: int) -> float:
    """Useful training FLOPs per token of the language model; see the module docstring."""
    h, i, v, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    return 6 * (n * (4 * h * h + 2 * h * i) + h * v) + n * 6 * 2 * seq * h


def measured_matmul_peak(dtype, sizes=(1024, 2048, 4096), reps: int = 4) -> float:
    """FLOP/s of the fastest n x n x n matmul over `sizes`, best of `reps` runs each."""
    mm = jax.jit(jnp.matmul)
    peak = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        mm(a, b).block_until_ready()
        for _ in range(reps):
            t = time.perf_counter()
            mm(a, b).block_until_ready()
            peak = max(peak, 2 * n ** 3 / (time.perf_counter() - t))
    return peak


def peak_flops(dtype: str) -> tuple[float, str]:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return (measured_matmul_peak(jnp.dtype(dtype)),
                f"measured {dtype} matmul, best of n^3 for n = 1024, 2048, 4096")
    kind = dev.device_kind.lower()
    for key, (bf16, fp32) in PEAK_FLOPS.items():
        if key in kind:
            return (bf16 if dtype == "bfloat16" else fp32) * jax.device_count(), "datasheet"
    return float("nan"), f"unknown device kind {dev.device_kind!r}"


def peak_memory_bytes() -> int:
    devs = jax.local_devices()
    if devs[0].platform == "cpu":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in devs)


def random_batch(batch: int, seq: int, vocab: int, n_pred: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq), n_pred, replace=False)
                                  for _ in range(batch)]), axis=1)
    return {
        "input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int32),
        "token_type_ids": (np.arange(seq) >= seq // 2).astype(np.int32)[None].repeat(batch, 0),
        "attention_mask": np.ones((batch, seq), np.int32),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": rng.integers(0, vocab, (batch, n_pred)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, n_pred), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (batch,)).astype(np.int32),
    }


def random_lm_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    """Random ids; each position is labelled with the next id (the last with a fresh one)."""
    ids = np.random.default_rng(seed).integers(0, vocab, (batch, seq + 1)).astype(np.int32)
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:],
            "attention_mask": np.ones((batch, seq), np.int32),
            "label_weights": np.ones((batch, seq), np.float32)}


def decode_main(a, cfg: BertConfig) -> dict:
    """`--decode`: new tokens per second of `decoding.generate` on random weights and prompts."""
    model = Decoder(cfg, nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    prompt = jnp.asarray(np.random.default_rng(0).integers(1, a.vocab, (a.batch, a.prompt)),
                         jnp.int32)
    method = "greedy" if a.beams == 1 else "beam"
    run = lambda: decoding.generate((graphdef, params), prompt, max_new_tokens=a.new,
                                    method=method, num_beams=a.beams)
    t = time.perf_counter()
    jax.block_until_ready(run())
    compile_s = time.perf_counter() - t
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        out = jax.block_until_ready(run())
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    call_s = statistics.median(times)
    dev = jax.devices()[0]
    result = {
        "arch": "lm", "decode": True, "model": a.model, "beams": a.beams, "batch": a.batch,
        "prompt": a.prompt, "new": a.new, "vocab": a.vocab, "dtype": a.dtype,
        "position_embedding": a.position_embedding,
        "new_tokens_per_s": round(a.batch * a.new / call_s, 1), "call_s": round(call_s, 6),
        "call_s_mean": round(statistics.mean(times), 6),
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "device": f"{dev.device_kind} x{jax.device_count()}", "jax": jax.__version__,
        "compile_s": round(compile_s - call_s, 2), "peak_memory_bytes": peak_memory_bytes(),
        "new_tokens": int(out.lengths.sum()),
    }
    print(json.dumps(result))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="bert", choices=["bert", "lm"],
                   help="bert: BERT pretraining (MLM + NSP); lm: the decoder-only language model")
    p.add_argument("--decode", action="store_true",
                   help="--arch lm: time decoding (generate) instead of training steps")
    p.add_argument("--beams", type=int, default=1, help="--decode: 1 = greedy, K > 1 = beam search")
    p.add_argument("--prompt", type=int, default=32, help="--decode: prompt tokens")
    p.add_argument("--new", type=int, default=64, help="--decode: new tokens per sequence")
    p.add_argument("--model", default="base", help="preset size: tiny, mini, small, medium, base, large")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--mesh", default="1,1,1", help="data,fsdp,tensor (one may be -1)")
    p.add_argument("--remat", action="store_true")
    p.add_argument("--steps_per_execution", type=int, default=1,
                   help="optimiser steps per jitted call (train.steps_per_execution); each timed "
                        "call is counted as this many steps")
    p.add_argument("--max_predictions", type=int, default=None, help="default: 20 per 128 tokens, as BERT")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--position_embedding", default="absolute", choices=["absolute", "rotary"])
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="write a jax.profiler trace of the timed steps to DIR (for Perfetto, "
                        "TensorBoard)")
    p.add_argument("--attention", default=None, choices=["einsum", "xla", "cudnn"],
                   help="default: einsum on CPU, jax.nn.dot_product_attention's choice elsewhere")
    a = p.parse_args(argv)
    if a.decode and a.arch != "lm":
        p.error("--decode needs --arch lm")
    lm = a.arch == "lm"
    n_pred = a.max_predictions or max(1, round(a.seq * 20 / 128))  # BERT's 20 at 128, 80 at 512

    cfg = BertConfig.from_preset(a.model, vocab_size=a.vocab, dtype=a.dtype, remat=a.remat,
                                 dropout_rate=a.dropout,
                                 max_position_embeddings=max(512, a.seq, a.prompt + a.new),
                                 position_embedding=a.position_embedding,
                                 attention_impl=a.attention)
    if a.decode:
        return decode_main(a, cfg)
    mesh_cfg = ml_collections.ConfigDict(dict(zip(parallel.MESH_AXES, map(int, a.mesh.split(",")))))
    mesh = parallel.make_mesh(mesh_cfg)
    make_model = ((lambda rngs: Decoder(cfg, rngs)) if lm
                  else (lambda rngs: BertForPreTraining(cfg, rngs)))
    steps = make_steps(make_model, optim.make_optimizer(ml_collections.ConfigDict(TRAIN)),
                       losses.combined_loss({"clm": 1.0} if lm else {"mlm": 1.0, "nsp": 1.0}), mesh,
                       parallel.rules_from_config(mesh_cfg), seed=0,
                       steps_per_execution=a.steps_per_execution)
    state = steps.init()
    k = a.steps_per_execution
    batch = (random_lm_batch(a.batch, a.seq, a.vocab) if lm
             else random_batch(a.batch, a.seq, a.vocab, n_pred))
    if k > 1:   # the same batch k times: the data do not change the work
        batch = {name: np.stack([v] * k) for name, v in batch.items()}
    batch = parallel.global_batch(batch, mesh, stacked=k > 1)

    t = time.perf_counter()
    train = steps.train.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    times, faults = [], 0
    for i in range(a.warmup + a.steps):
        if a.profile and i == a.warmup:
            jax.profiler.start_trace(a.profile, create_perfetto_trace=True)
        faults_before, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        state, metrics = train(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= a.warmup:
            times.append((time.perf_counter() - t) / k)
            faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / k
    if a.profile:
        jax.profiler.stop_trace()
    step_s = statistics.median(times)

    tokens_per_s = a.batch * a.seq / step_s
    fpt = lm_flops_per_token(cfg, a.seq) if lm else flops_per_token(cfg, a.seq, n_pred)
    peak, peak_source = peak_flops(a.dtype)
    dev = jax.devices()[0]
    result = {
        "arch": a.arch, "model": a.model, "batch": a.batch, "seq": a.seq, "vocab": a.vocab,
        "dtype": a.dtype,
        "mesh": dict(mesh.shape), "remat": a.remat, "attention": a.attention, "dropout": a.dropout,
        "position_embedding": a.position_embedding, "max_predictions": None if lm else n_pred,
        "tokens_per_s": round(tokens_per_s, 1), "step_s": round(step_s, 4),
        "step_s_mean": round(statistics.mean(times), 4),
        "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
        "flops_per_token": fpt, "peak_flops": peak, "peak_source": peak_source,
        "mfu": round(fpt * tokens_per_s / peak, 4),
        "device": f"{dev.device_kind} x{jax.device_count()}", "jax": jax.__version__,
        "compile_s": round(compile_s, 2), "peak_memory_bytes": peak_memory_bytes(),
        "page_faults_per_step": int(faults // a.steps), "steps_per_execution": k,
        "loss": round(float(metrics["loss"].reshape(-1)[-1]), 4),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    allocator.keep_freed_memory()   # opt-in (NLP_JAX_KEEP_FREED_MEMORY=1), as in run.py
    main()
