"""Test set-up: 8 fake CPU devices, so sharded layouts run on any machine.

XLA reads the flag when JAX first starts its backend, so it is set before anything imports jax."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
