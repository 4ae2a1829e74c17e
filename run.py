r"""Entry point: python run.py --config configs/<name>.py[:arg] --workdir DIR [--config.a.b=value]

Flags only; the run itself is nlp_jax.train.loop.train_and_evaluate (importable from a notebook).
Multi-host: pass --coordinator_address/--num_processes/--process_id (JAX's names), or
--distributed to let JAX detect the cluster (Cloud TPU, SLURM, ...).
"""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/pretrain.py:tiny.",
                                 lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the tokenizer.")
flags.DEFINE_enum("mode", "train", ["train"], "What to do.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detected cluster).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from nlp_jax import parallel
    if FLAGS.distributed or FLAGS.coordinator_address:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    from nlp_jax.train.loop import train_and_evaluate
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, KeyError, FileNotFoundError, ImportError, UnicodeDecodeError) as e:
        # Bad input: one clear line, no traceback (the message names the cause and the fix).
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.exit(f"error: {msg}")


if __name__ == "__main__":
    app.run(main)
