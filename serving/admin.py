"""The server's control plane, closed to every client: which Triton APIs change the server, and how they are shut.

Triton's model-repository API loads models whose files travel inside the request (with the Python
backend: any code, run inside the server), unloads the ensemble, and with the logging, trace and
shared-memory APIs changes the server's settings or maps host memory. Triton can only restrict
these APIs to requests carrying a header with a given value, and that value is a `tritonserver`
argument, which every local user reads in /proc/PID/cmdline. So by default no usable key exists:
- the servers run with `--model-control-mode=none` (serving.supervisor): no model is loaded or
  unloaded at run time, by anyone (a server whose Python step died is restarted whole instead);
- RESTRICTED_APIS answer only a header that no client can send (CLOSED_HEADER, CLOSED_VALUE): its
  name has an upper-case letter, which HTTP/2 (gRPC) forbids in a field name, and its value a line
  feed, which HTTP/1.1 forbids in a field value. Reading it in the process list gains nothing.
An operator who must reach the control plane opts in with a key file (`make serve`'s
`--admin-key-file`, $SER_ADMIN_KEY_FILE here): RESTRICTED_APIS then answer requests that carry the
key in ADMIN_HEADER, and KEY_VISIBLE says aloud what that costs on a shared host.

    python -m ser_triton.serving.admin tritonserver --model-repository=/models ...

runs that command with the restricting flags added (closed, or with the key from
$SER_ADMIN_KEY_FILE), for images whose entrypoint is tritonserver itself (the GPU image, KServe).
"""

import os
import re
import secrets
import shutil
import sys
from pathlib import Path

ADMIN_HEADER = "ser-admin-key"
"""The request header (gRPC metadata key) that carries an operator's admin key."""

RESTRICTED_APIS = ("model-repository", "logging", "trace", "shared-memory")
"""Triton API groups that change the server: refused without the admin key, over HTTP and gRPC."""

CLOSED_HEADER = "SER-Control-Plane"
"""The header RESTRICTED_APIS want where no key is set. gRPC looks it up as metadata
`triton-grpc-protocol-SER-Control-Plane`: upper case, which HTTP/2 forbids in a field name (gRPC
resets such a stream), so no gRPC request carries it. HTTP/1.1 names are case-blind: there the
value closes it."""

CLOSED_VALUE = "closed\nto-every-client"
"""The value CLOSED_HEADER must have: a line feed followed by a letter, which no HTTP/1.1 field
value can hold (obs-fold continues a line with a space or a tab); the HTTP server drops the
connection of a request that tries. gRPC would take a line feed in a value: there the name closes it."""

KEY_FILE_VARIABLE = "SER_ADMIN_KEY_FILE"

KEY_VISIBLE = ("the admin key is a tritonserver argument, so every local user of this host (or container) can "
               "read it in the process list (/proc/PID/cmdline) and send it to the server's own ports: with it, "
               "anyone there can load their own code into the server. Use a key only where every local user is "
               "trusted; without one the control plane is closed to everyone")
"""What an admin key costs, said in the help, the docs and a warning at every start that uses one."""

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


def key_from(path: Path | None) -> str | None:
    """The key in `path`; None (the control plane closed to everyone) where no file is given."""
    return read_key(path) if path is not None else None


def key_from_environment() -> str | None:
    """The key in the file $SER_ADMIN_KEY_FILE names (a mounted Secret), else None: closed."""
    key_file = os.environ.get(KEY_FILE_VARIABLE)
    return key_from(Path(key_file) if key_file else None)


def restricted(arguments: list[str], who: str) -> list[str]:
    """`arguments` for tritonserver with RESTRICTED_APIS restricted (closed, or to the key in
    $SER_ADMIN_KEY_FILE, which `who` then warns is visible), unless they restrict APIs themselves."""
    if any(a.startswith(("--http-restricted-api", "--grpc-restricted-protocol")) for a in arguments):
        return list(arguments)
    key = key_from_environment()
    if key is not None:
        warn_key_visible(who)
    return [*arguments, *restricting_flags(key)]


def restricting_flags(key: str | None = None) -> list[str]:
    """tritonserver flags that make RESTRICTED_APIS answer only requests carrying `key` in ADMIN_HEADER;
    with no key, only the header no client can send (closed to everyone)."""
    apis = ",".join(RESTRICTED_APIS)
    header, value = (CLOSED_HEADER, CLOSED_VALUE) if key is None else (ADMIN_HEADER, key)
    return [f"--http-restricted-api={apis}:{header}={value}",
            f"--grpc-restricted-protocol={apis}:{header}={value}"]


def headers(key: str) -> dict[str, str]:
    return {ADMIN_HEADER: key}


def warn_key_visible(who: str) -> None:
    print(f"{who}: WARNING: {KEY_VISIBLE}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m ser_triton.serving.admin tritonserver [FLAG ...]  (control plane closed; "
              f"${KEY_FILE_VARIABLE} names an admin key file to open it to that key)", file=sys.stderr)
        return 2
    program = shutil.which(command[0])
    if program is None:
        print(f"serving.admin: {command[0]} is not on PATH", file=sys.stderr)
        return 2
    try:
        arguments = restricted(command[1:], "serving.admin")
    except AdminKeyError as error:
        print(f"serving.admin: {error}", file=sys.stderr)
        return 2
    os.execv(program, [command[0], *arguments])


if __name__ == "__main__":
    sys.exit(main())
