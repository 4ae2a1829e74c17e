"""Test set-up: 8 fake CPU devices, so sharded layouts run on any machine, and one compilation
cache for the whole session.

XLA reads the flag when JAX first starts its backend, so it is set before anything imports jax.
Most of the suite's time is XLA compiling the same small programs again (one tiny model, a few
batch shapes, in many tests and in the subprocesses they start): JAX's persistent cache, in a
directory of this session only (the environment variables reach the subprocesses too), compiles
each once. It changes no result: a cache hit is the same executable."""
import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="nlp_jax_tests_jit_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
