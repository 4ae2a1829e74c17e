"""The entry points' restart with transparent huge pages (nlp_jax/hugepages.py)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nlp_jax import hugepages

# Restarts itself, then allocates 64 MiB through malloc (as XLA:CPU does) and reports how much of
# it the kernel backs with huge pages.
CHILD = textwrap.dedent("""
    import ctypes, json, os, sys
    from nlp_jax import hugepages
    hugepages.reexec()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    n = 64 << 20
    ctypes.memset(libc.malloc(n), 1, n)
    huge_kib = next(int(l.split()[1]) for l in open("/proc/self/smaps_rollup")
                    if l.startswith("AnonHugePages"))
    print(json.dumps([os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], huge_kib]))
""")


def run_child(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NLP_JAX_HUGE_PAGES")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, "-c", CHILD, "x", "--flag=1"], env={**base, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(not hugepages.supported(),
                    reason="huge pages are not granted on request here (kernel or libc)")
def test_restart_keeps_the_command_and_gets_huge_pages():
    tunables, argv, huge_kib = run_child()
    assert tunables == "glibc.malloc.hugetlb=1"
    assert argv == ["x", "--flag=1"]
    assert huge_kib >= 32 << 10          # most of the 64 MiB block

    # The user's own tunables are kept; the opt-out leaves the process as it was.
    tunables, _, _ = run_child(GLIBC_TUNABLES="glibc.malloc.check=0")
    assert tunables == "glibc.malloc.check=0:glibc.malloc.hugetlb=1"
    tunables, argv, huge_kib = run_child(NLP_JAX_HUGE_PAGES="0")
    assert (tunables, huge_kib) == (None, 0)
