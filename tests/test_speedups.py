"""keep_freed_memory: a buffer freed and allocated again is not page-faulted in a second time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

REUSE = textwrap.dedent("""
    import ctypes, resource, sys
    from freyvae_cli.speedups import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 8 << 20

    def touch_new_buffer() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    touch_new_buffer()
    print(touch_new_buffer())  # the second time: page faults of a buffer the process already had
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_a_freed_buffer_is_reused_without_page_faults():
    def second_faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    pages = (8 << 20) // 4096
    assert second_faults("default") > pages / 2  # glibc gave the 8 MiB back and faults it in again
    assert second_faults("keep") < pages / 50
