"""Optional: keep freed memory in the process, so XLA:CPU does not fault its buffers in every step.

Why: XLA:CPU takes each step's temporaries (one large block) from malloc and frees them at the end
of the step. glibc hands blocks that large back to the kernel on free (they are mmap-ed), so the
next step faults the same memory in again, 4 KiB at a time, and the kernel zeroes every page: a
large share of a CPU step goes to the kernel (`page_faults_per_step` in the benchmark's output;
the measured figures are in docs/performance.md, "Keeping freed memory").

`keep_freed_memory()` sets, through mallopt(3):
  * M_ARENA_MAX = 1: one arena for all threads (XLA's worker threads would otherwise get arenas of
    their own, which mmap anything large whatever the options below say);
  * M_MMAP_MAX = 0: no block is served by its own mmap (which free would unmap);
  * M_TRIM_THRESHOLD = 2 GiB - 1 (the largest mallopt takes): the top of the heap goes back to the
    kernel only when more than that is free at once.
The step's block is then reused once the heap holds room for it next to the step's outputs; until
then the heap grows. That makes the steps faster once the faults stop, but costs resident memory
(see docs/performance.md). Because of that memory cost it is off unless NLP_JAX_KEEP_FREED_MEMORY=1;
several steps per jitted call (`train.steps_per_execution`) removes most of the faults without it.
Arenas are taken by threads at their first allocation, so it has to run before JAX starts its
threads: `run.py` and `python -m nlp_jax.bench` call it first thing.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8   # glibc's malloc.h
OPTIONS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1))


def keep_freed_memory() -> bool:
    """With NLP_JAX_KEEP_FREED_MEMORY=1, sets the options above on glibc (Linux); returns whether
    they were set."""
    if os.environ.get("NLP_JAX_KEEP_FREED_MEMORY") != "1" or not sys.platform.startswith("linux"):
        return False
    try:
        if os.confstr("CS_GNU_LIBC_VERSION").split()[0] != "glibc":
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError, IndexError):
        return False                         # another C library (musl, ...): leave it alone
    return all(mallopt(option, value) == 1 for option, value in OPTIONS)
