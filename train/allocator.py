"""Keep freed tensor memory for the next step instead of giving it back to the kernel.

glibc's malloc serves large blocks with mmap and trims the heap as soon as its top is free, so every
training step's multi-megabyte activations come back as fresh pages, each zeroed by a page fault.
Measured on a 2-core AMD EPYC (AVX2), `ser-train` on RAVDESS (small preset, scratch recipe, one
thread): an epoch took 10.6 s of training, half of the process's time in the kernel; with the settings
below 4.9 s, the same losses to the last digit. The pad and trim threshold matter: with a 64 MiB pad and
a 1 GiB threshold the epoch still took 8.5-9.9 s. Elsewhere than glibc: nothing.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""glibc's largest: blocks up to this come from the heap (larger ones are mapped whatever one sets)."""
TRIM_THRESHOLD_BYTES = 2**31 - 1
"""Free heap kept before any is given back (the largest value mallopt takes)."""
TOP_PAD_BYTES = 256 * 1024 * 1024
"""Extra heap asked for each time it grows, so that a step's growth is one system call."""


def keep_freed_memory() -> bool:
    """True where the C library took the settings (glibc), False where it has no mallopt."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                                                  (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                                                                  (M_TOP_PAD, TOP_PAD_BYTES)))
