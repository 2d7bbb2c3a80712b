"""The server's control plane, closed to clients: which Triton APIs need the admin key, and the key.

Triton's model-repository API loads models whose files travel inside the request (with the Python
backend: any code, run inside the server), unloads the ensemble, and with the logging, trace and
shared-memory APIs changes the server's settings or maps host memory. Every one of them answers
only requests that carry the admin key in the `ADMIN_HEADER` header; inference, health and
metadata stay open. The key is made anew at each start (or read from a file: a Kubernetes Secret)
and never printed; only the process that started the server (the launcher's watchdog) uses it.

    python -m ser_triton.serving.admin tritonserver --model-repository=/models ...

runs that command with the restricting flags added and the key from $SER_ADMIN_KEY_FILE (or a
new one), for images whose entrypoint is tritonserver itself (the GPU image, KServe).
"""

import os
import re
import secrets
import shutil
import sys
from pathlib import Path

ADMIN_HEADER = "ser-admin-key"
"""The request header (gRPC metadata key) that carries the admin key."""

RESTRICTED_APIS = ("model-repository", "logging", "trace", "shared-memory")
"""Triton API groups that change the server: refused without the admin key, over HTTP and gRPC."""

KEY_FILE_VARIABLE = "SER_ADMIN_KEY_FILE"

_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")


class AdminKeyError(ValueError):
    """The admin key file cannot be used; the message says why and what to do."""


def new_key() -> str:
    return secrets.token_urlsafe(32)


def read_key(path: Path) -> str:
    """The key in `path` (its first line, surrounding blanks dropped)."""
    try:
        key = Path(path).read_text().strip()
    except OSError as error:
        raise AdminKeyError(f"cannot read the admin key file {path}: {error.strerror}") from None
    if not _KEY.fullmatch(key):
        raise AdminKeyError(f"the admin key in {path} must be one line of 16 to 256 letters, digits or ._~+/=- "
                            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key


def key_from(path: Path | None) -> str:
    return read_key(path) if path is not None else new_key()


def key_from_environment() -> str:
    """The key in the file $SER_ADMIN_KEY_FILE names (a mounted Secret), else a new one."""
    key_file = os.environ.get(KEY_FILE_VARIABLE)
    return key_from(Path(key_file) if key_file else None)


def restricted(arguments: list[str]) -> list[str]:
    """`arguments` for tritonserver with RESTRICTED_APIS restricted, unless they restrict APIs themselves."""
    if any(a.startswith(("--http-restricted-api", "--grpc-restricted-protocol")) for a in arguments):
        return list(arguments)
    return [*arguments, *restricting_flags(key_from_environment())]


def restricting_flags(key: str) -> list[str]:
    """tritonserver flags that make RESTRICTED_APIS answer only requests carrying `key`."""
    apis = ",".join(RESTRICTED_APIS)
    return [f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
            f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}"]


def headers(key: str) -> dict[str, str]:
    return {ADMIN_HEADER: key}


def main(argv=None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m ser_triton.serving.admin tritonserver [FLAG ...]  (key from $SER_ADMIN_KEY_FILE, else a new one)",
              file=sys.stderr)
        return 2
    program = shutil.which(command[0])
    if program is None:
        print(f"serving.admin: {command[0]} is not on PATH", file=sys.stderr)
        return 2
    try:
        arguments = restricted(command[1:])
    except AdminKeyError as error:
        print(f"serving.admin: {error}", file=sys.stderr)
        return 2
    os.execv(program, [command[0], *arguments])


if __name__ == "__main__":
    sys.exit(main())
