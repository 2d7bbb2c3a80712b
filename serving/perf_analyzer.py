"""perf_analyzer, the load generator of Triton, installed from the tritonclient 2.51.0 wheel.

`pip install perf-analyzer` gives an empty placeholder on this glibc, but the tritonclient 2.51.0
wheel carries a working `bin/perf_analyzer` (matching the bundled server, 2.51.0). It is installed
apart (`pip install --no-deps --target <venv>/lib/perf_analyzer`), and its two missing libraries
(libb64.so.0d, libcudart.so.12) are satisfied by symlinks to the copies that the nvidia-pytriton
wheel bundles (file names there carry hash suffixes). `make setup` installs it; the
`perf_analyzer` command in .venv/bin runs it (serving.commands).
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ser_triton.serving.bundled import wheel_libraries

TRITONCLIENT_VERSION = "2.51.0"
NEEDED_LIBRARIES = {"libb64.so.0d": "libb64*.so*", "libcudart.so.12": "libcudart*.so.12*"}
DEFAULT_HOME = Path(sys.prefix) / "lib" / "perf_analyzer"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be installed or failed; the message says why."""


@dataclass
class PerfAnalyzer:
    binary: Path
    library_path: Path

    def environment(self) -> dict:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.library_path), env.get("LD_LIBRARY_PATH")) if p)
        return env

    def version(self) -> str:
        done = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, env=self.environment())
        if done.returncode != 0:
            raise PerfAnalyzerError(f"{self.binary} does not run: {(done.stderr or done.stdout).strip()[-500:]}")
        lines = (done.stdout + done.stderr).strip().splitlines()
        return lines[-1] if lines else "unknown"


def install(home: Path = DEFAULT_HOME) -> PerfAnalyzer:
    """The perf_analyzer binary under `home`, installed first if it is not there."""
    home = Path(home).resolve()
    binary = home / "bin" / "perf_analyzer"
    fresh = not binary.is_file()
    if fresh:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(home),
             f"tritonclient=={TRITONCLIENT_VERSION}"], capture_output=True, text=True)
        if done.returncode != 0 or not binary.is_file():
            raise PerfAnalyzerError(
                f"could not install perf_analyzer (tritonclient=={TRITONCLIENT_VERSION} into {home}): "
                f"{done.stderr.strip()[-800:]}")
    binary.chmod(0o755)
    libraries = home / "lib"
    libraries.mkdir(exist_ok=True)
    bundled = wheel_libraries()
    for name, pattern in NEEDED_LIBRARIES.items():
        link = libraries / name
        if link.exists():
            continue
        matches = sorted(bundled.glob(pattern))
        if not matches:
            raise PerfAnalyzerError(f"{name} not found in {bundled} (is nvidia-pytriton installed? run `make setup`)")
        if link.is_symlink():
            link.unlink()
        link.symlink_to(matches[0])
    analyzer = PerfAnalyzer(binary, libraries)
    if fresh:
        analyzer.version()  # fails here, with its reason, if the binary cannot run on this machine
    return analyzer


if __name__ == "__main__":  # make setup: python -m ser_triton.serving.perf_analyzer
    print(f"perf_analyzer: {install().version()}")
