"""Transparent huge pages for XLA's CPU buffers: the entry points restart themselves with them.

Why: XLA:CPU takes each step's activations and gradients from malloc, and glibc serves large
blocks from fresh mmap-ed pages, so every step faults in (and the kernel zeroes) its whole working
set again, 4 KiB at a time. Where the kernel grants huge pages on request only
(/sys/kernel/mm/transparent_hugepage/enabled = madvise, the common default), glibc 2.35+ asks for
them when started with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: 512x fewer faults and TLB misses.
Measured with `python -m nlp_jax.bench` on a 2-core CPU: +15% tokens/s for BERT-base, +32% for
the 4-layer model (README, "Speed"). The tunable is read when the process starts, so `run.py`
and the benchmark re-execute themselves once with it set; a notebook can only set it before the
kernel starts. NLP_JAX_HUGE_PAGES=0 turns this off.
"""
from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def supported() -> bool:
    """True where the tunable changes something: glibc 2.35+ and THP granted on request only."""
    try:
        libc, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        with open(THP_SETTING) as f:
            madvise = "[madvise]" in f.read()    # 'always' needs no request, 'never' grants none
    except (ValueError, OSError, AttributeError):
        return False                       # not glibc, or no THP on this kernel
    return libc == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35) and madvise


def reexec() -> None:
    """Replaces this process by the same command line with the tunable set, where it helps.

    Call it first thing under `if __name__ == "__main__"`, before anything is started."""
    if (os.environ.get("NLP_JAX_HUGE_PAGES", "1") == "0"
            or "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", "")  # set already
            or not supported()):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), TUNABLE]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
