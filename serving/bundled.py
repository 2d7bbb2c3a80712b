"""The Triton binaries that ship in PyPI wheels, and what they need to run on this machine.

The `nvidia-pytriton` wheel carries a complete tritonserver 2.51 and its Python backend; its
backends/python folder lacks the stub for the running interpreter, so a backend folder is
assembled from symlinks. The stub's embedded Python finds its packages through the first `python3`
on PATH (this virtualenv) and must bind this interpreter's libpython, not the system's.
"""

import os
import sys
import sysconfig
from pathlib import Path


class BundledServerMissing(RuntimeError):
    """The wheel or one of its files is missing; the message says what to do."""


def wheel_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise BundledServerMissing("the nvidia-pytriton wheel is not installed: run `make setup`") from None
    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> Path:
    return wheel_root() / "bin" / "tritonserver"


def wheel_libraries() -> Path:
    """The shared libraries bundled with the nvidia-pytriton wheel (libb64, libcudart, ...)."""
    return wheel_root().parent.parent / "nvidia_pytriton.libs"


def backend_directory(into: Path) -> Path:
    """A backends folder whose python/ holds the backend library, its utils and the stub for this
    interpreter; made (or refreshed) under `into`."""
    root = wheel_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": root / f"python_backend_stubs/{version}/triton_python_backend_stub",
    }
    python = Path(into) / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise BundledServerMissing(f"{source} is missing from the nvidia-pytriton wheel (Python {version})")
        link = python / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return Path(into)


def server_environment(base: dict | None = None) -> dict:
    """The environment tritonserver and its Python stubs need; secrets are left out."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    for secret in [k for k in env if "TOKEN" in k.upper() or "SECRET" in k.upper()]:
        env.pop(secret)
    return env


CPU_FLAGS = ("--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0")
"""What a CPU-only machine needs to keep the log free of GPU errors."""
