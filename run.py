r"""Entry point: python run.py --config configs/<name>.py[:arg] --workdir DIR [--config.a.b=value]

Flags only; the run itself is nlp_jax.train.trainer.train_and_evaluate (importable from a notebook),
whichever recipe the config names (config.recipe: pretrain, finetune, ...).
Multi-host: pass --coordinator_address/--num_processes/--process_id (JAX's names), or
--distributed to let JAX detect the cluster (Cloud TPU, SLURM, ...).
"""
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/pretrain.py:tiny.",
                                 lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the tokenizer "
                    "(default: runs/<config file name>[-<arg>]).")
flags.DEFINE_enum("mode", "train", ["train", "predict", "generate", "export"],
                  "train (or resume), predict with a fine-tuned workdir, generate text with a "
                  "language-model or seq2seq workdir, or export a LoRA / AdaLoRA workdir merged "
                  "into plain weights (--output).")
flags.DEFINE_string("output", None, "--mode export: the new directory for the merged workdir.")
flags.DEFINE_string("input", None, "--mode predict / generate: a text file, one input a line "
                    "(default stdin).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detected cluster).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def default_workdir(config_arg: str) -> str:
    """configs/pretrain.py -> runs/pretrain; configs/finetune_glue.py:mrpc -> runs/finetune_glue-mrpc."""
    path, _, arg = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}-{arg}" if arg else name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = FLAGS.workdir or default_workdir(FLAGS["config"].config_filename)
    # Our own progress at INFO; the libraries' (Orbax, Grain, XLA) only from WARNING up.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("nlp_jax").setLevel(logging.INFO)
    from nlp_jax import parallel
    if FLAGS.distributed or FLAGS.coordinator_address:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    from nlp_jax.train.trainer import Stopped
    try:
        if FLAGS.mode == "predict":
            from nlp_jax.predict import predict_main
            predict_main(workdir, FLAGS.input)
        elif FLAGS.mode == "generate":
            from nlp_jax.generate import generate_main
            generate_main(FLAGS.config, workdir, FLAGS.input)
        elif FLAGS.mode == "export":
            from nlp_jax.predict import export_main
            print(f"wrote {export_main(workdir, FLAGS.output)}")
        else:
            from nlp_jax.train.trainer import train_and_evaluate
            train_and_evaluate(FLAGS.config, workdir)
    except Stopped as e:   # SIGTERM / SIGINT: a checkpoint was saved; the shell's exit status
        print(f"nlp_jax: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except (ValueError, KeyError, FileNotFoundError, ImportError, UnicodeDecodeError) as e:
        # Bad input: one clear line, no traceback (the message names the cause and the fix).
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.exit(f"error: {msg}")


def parse_flags(argv):
    """absl's parser, with a bad --config override or config file reported in one line."""
    try:
        rest = FLAGS(argv)
        FLAGS.config.to_dict()  # the config file loads lazily: load it now, so errors surface here
        return rest
    except (flags.Error, OSError) as e:
        # config_flags embeds tracebacks in its messages: the last line is the cause.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        sys.exit(f"error: --config: {lines[-1]}" if len(lines) > 1 else f"error: {e}")
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        sys.exit(f"error: bad --config override or config file ({e!s}); check these against the "
                 f"config file's fields: {' '.join(overrides) or '(none)'}")


if __name__ == "__main__":
    from nlp_jax import allocator
    allocator.keep_freed_memory()   # opt-in, before JAX starts its threads: nlp_jax/allocator.py
    app.run(main, flags_parser=parse_flags)
