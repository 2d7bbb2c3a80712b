"""The commands users type, as in a Triton container: `tritonserver` and `perf_analyzer`.

`make setup` installs them into .venv/bin (console scripts of this package). Each sets up what
the bundled binary needs on this machine and then replaces itself with it (exec), so arguments,
signals and exit codes are the binary's own:

    .venv/bin/tritonserver --model-repository model_repository
    .venv/bin/perf_analyzer -m ser --input-data perf_input.json --concurrency-range 1:4

Where the Triton container's server listens on every interface with its control plane open, this
`tritonserver` listens on loopback and closes the model-repository, logging, trace and
shared-memory APIs to every request (serving.admin; to the key in $SER_ADMIN_KEY_FILE where it is
set), unless the command line says otherwise (--http-address=..., --http-restricted-api=...).
Clients on other machines reach a server through the edge: `make serve`.
"""

import os
import sys
from pathlib import Path

from ser_triton.serving import admin, bundled
from ser_triton.serving.perf_analyzer import PerfAnalyzerError, install

BACKENDS_HOME = Path(sys.prefix) / "lib" / "ser-triton" / "backends"

LOOPBACK_FLAGS = ("--http-address", "--grpc-address", "--metrics-address")


def _given(arguments: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in arguments)


def tritonserver(argv=None) -> int:
    """The bundled tritonserver with its Python backend assembled; flags pass through unchanged.

    Adds --backend-directory (the assembled one) and the CPU flags that keep the log free of GPU
    errors, each only where the command line does not give it."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        binary = bundled.tritonserver_binary()
        if not _given(arguments, "--backend-directory"):
            arguments.append(f"--backend-directory={bundled.backend_directory(BACKENDS_HOME)}")
    except bundled.BundledServerMissing as error:
        print(f"tritonserver: {error}", file=sys.stderr)
        return 1
    arguments += [flag for flag in bundled.CPU_FLAGS if not _given(arguments, flag.split("=")[0])]
    arguments += [f"{flag}=127.0.0.1" for flag in LOOPBACK_FLAGS if not _given(arguments, flag)]
    try:
        arguments = admin.restricted(arguments, "tritonserver")
    except admin.AdminKeyError as error:
        print(f"tritonserver: {error}", file=sys.stderr)
        return 1
    os.execve(binary, [str(binary), *arguments], bundled.server_environment())


def perf_analyzer(argv=None) -> int:
    """perf_analyzer 2.51.0 (installed on first use if `make setup` did not), arguments unchanged."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        analyzer = install()
    except (PerfAnalyzerError, bundled.BundledServerMissing) as error:
        print(f"perf_analyzer: {error}", file=sys.stderr)
        return 1
    os.execve(analyzer.binary, [str(analyzer.binary), *arguments], analyzer.environment())
