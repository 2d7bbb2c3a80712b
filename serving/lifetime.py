"""Child processes that end with the process that started them, even when it is killed hard.

A launcher killed by SIGKILL runs no clean-up code, and its children (tritonserver in its own
session, nginx) would go on holding the ports. Linux can send a child a signal when its parent
dies (prctl PR_SET_PDEATHSIG), set in the child between fork and exec. The "parent" is the thread
that started the child: start long-lived children from the main thread, never from a worker
thread that may end first.
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def ends_with_parent(death_signal: int = signal.SIGTERM):
    """A `preexec_fn` for subprocess.Popen: the child gets `death_signal` when this process dies.

    SIGTERM lets tritonserver and nginx shut down as they do on `kill`: tritonserver stops its
    Python stubs and removes their shared memory, the nginx master stops its workers."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def tie_to_parent():
        if libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the tie was made
            os.kill(os.getpid(), death_signal)

    return tie_to_parent
