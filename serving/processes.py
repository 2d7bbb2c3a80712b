"""What /proc says about a server: its Python stub processes, process group and resident memory."""

import os
import re
import signal
import subprocess
from pathlib import Path

STUB = b"triton_python_backend_stub"


def memory_mib(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of one process, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmHWM", "VmRSS")}
    return {"peak_rss_mib": round(found["VmHWM"]), "rss_mib": round(found["VmRSS"])}


def reset_peak(pid: int) -> None:
    """Make a process's peak resident memory (VmHWM) its current one, so that a later peak is new."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stubs(server_pid: int) -> dict[int, str]:
    """pid -> model, for the Python stub processes a tritonserver started."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            arguments = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int(re.search(rb"PPid:\s+(\d+)", (proc / "status").read_bytes()).group(1))
        except (OSError, AttributeError):
            continue
        if parent == server_pid and arguments[0].endswith(STUB):
            found[int(proc.name)] = Path(arguments[1].decode(errors="replace")).parent.parent.name
    return found


def how_it_ended(returncode: int) -> str:
    """'exited with code 1', or 'was killed by SIGKILL' (Popen's negative return codes)."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def group_members(group: int) -> list[int]:
    """The live processes of a process group (a group's id is not reused while it has members)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_leftovers(group: int) -> None:
    """SIGKILL what is left of a process group whose leader has exited (the Python stubs of a killed
    tritonserver, the worker of a killed nginx master); safe, since the id is still the group's."""
    if group_members(group):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def terminate(process, timeout: float = 10.0) -> None:
    """SIGTERM to a child (subprocess.Popen), SIGKILL if it is still there after `timeout` seconds,
    then whatever is left of its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    kill_leftovers(process.pid)


def shared_memory_files(server_pid: int, prefix: str) -> set[str]:
    """The /dev/shm files whose names start with `prefix` that the server or its stubs have mapped."""
    return mapped_files([server_pid, *stubs(server_pid)], prefix)


def every_process() -> list[int]:
    return [int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit()]


def mapped_files(pids, prefix: str) -> set[str]:
    """The /dev/shm files whose names start with `prefix` that these processes have mapped."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found.update(re.findall(rf"/dev/shm/({re.escape(prefix)}\S*)", maps))
    return found


def server_memory(server_pid: int) -> dict[str, dict]:
    """Resident memory of tritonserver and of each of its Python stubs ("stub:<model>"), MiB."""
    processes = {"tritonserver": memory_mib(server_pid)}
    for pid, model in stubs(server_pid).items():
        try:
            processes[f"stub:{model}"] = memory_mib(pid)
        except (OSError, AttributeError):  # the stub exited meanwhile
            continue
    return processes
