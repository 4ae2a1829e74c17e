"""Keep freed memory in the process, so XLA:CPU does not fault its buffers in again every step.

Why: XLA:CPU takes each step's activations and gradients from malloc and frees them at the end of
the step. glibc hands large blocks back to the kernel on free (they are mmap-ed, or sit in the
per-thread arenas of XLA's worker threads, which mmap anything large), so the next step faults the
same memory in again, 4 KiB at a time, and the kernel zeroes every page. Measured on a 2-core CPU:
358,000 page faults and 0.55 s of kernel time per BERT-base step (8 x 128; 2.15 s in all), 172,000
and 0.3 s per step of the 4-layer model (32 x 128; 0.59 s). With the three options below both are
zero after the first steps and the steps take 1.95 s and 0.42 s (README, "Speed").

`keep_freed_memory()` sets, through mallopt(3):
  * M_ARENA_MAX = 1: one arena for all threads; the main arena grows with brk and keeps what it has;
  * M_MMAP_MAX = 0: no block is served by its own mmap (which free would unmap);
  * M_TRIM_THRESHOLD = 2 GiB - 1 (the largest mallopt takes): the top of the heap goes back to the
    kernel only when more than that is free at once.
The cost: the process keeps its peak heap until it exits. Arenas are taken by threads at their
first allocation, so call it before JAX starts its threads: `run.py` and `python -m nlp_jax.bench`
do; in a notebook, call it in the first cell. NLP_JAX_KEEP_FREED_MEMORY=0 turns it off.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8   # glibc's malloc.h
OPTIONS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1))


def keep_freed_memory() -> bool:
    """Sets the options above on glibc (Linux); returns whether they were set."""
    if os.environ.get("NLP_JAX_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        if os.confstr("CS_GNU_LIBC_VERSION").split()[0] != "glibc":
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError, IndexError):
        return False                         # another C library (musl, ...): leave it alone
    return all(mallopt(option, value) == 1 for option, value in OPTIONS)
