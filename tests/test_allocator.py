"""NLP_JAX_KEEP_FREED_MEMORY=1: a freed large block is reused, not faulted in again (nlp_jax/allocator.py)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

# In a fresh process (the options must precede the threads' first allocation), a worker thread
# (as XLA's are) allocates, touches and frees a 64 MiB block twice, and reports the page faults of
# the second round: glibc's default unmaps the block on free, so the second round faults all of it.
CHILD = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from nlp_jax import allocator
    kept = allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    n, faults = 64 << 20, []
    def work():
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = libc.malloc(n)
            ctypes.memset(block, 1, n)
            libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(json.dumps([kept, faults[1]]))
""")


def second_round_faults(**env):
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    os.confstr("CS_GNU_LIBC_VERSION").split()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept, faults = second_round_faults(NLP_JAX_KEEP_FREED_MEMORY="1")
    assert kept and faults < pages // 100
    # Off by default: glibc's own behaviour, which faults the whole block in again.
    kept, faults = second_round_faults(NLP_JAX_KEEP_FREED_MEMORY="")
    assert not kept and faults > pages // 2
