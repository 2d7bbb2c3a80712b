"""ser-train keeps freed tensor memory: large temporaries stop costing a page fault per page each step."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy
from ser_triton.train.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):  # a step: activations pile up in the forward pass, all are freed after the backward one
    activations = [numpy.ones(1024 * 1024) for _ in range(20)]  # 20 blocks of 8 MiB
    del activations
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages_per_step = 20 * 8 * 1024 * 1024 // 4096  # fewer faults where the kernel maps huge pages
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 5 * pages_per_step  # the heap given back and faulted in again, step after step: the control
    assert kept < pages_per_step and kept * 10 < default  # the first step's pages, then the same memory again
