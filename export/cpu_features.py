"""What the CPU can do fast, from its feature flags: the instruction sets that decide which
precision is worth serving.

- amx:          Advanced Matrix Extensions (AMX-BF16 and AMX-INT8 tiles; Sapphire Rapids and later)
- avx512_bf16:  bf16 dot products in AVX-512 registers
- avx512_vnni / avx_vnni: int8 dot products without intermediate saturation
- avx2:         the baseline of x86-64 servers; int8 works but u8*s8 products may saturate
The detection reads /proc/cpuinfo (Linux) and is a pure function of the flags, so it is tested on
flag sets, not on the machine that runs the tests.
"""

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ISA_ORDER = ("amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


@dataclass(frozen=True)
class CPUInfo:
    """What /proc/cpuinfo says of the first processor: its model name and feature flags."""

    model: str = "unknown"
    flags: frozenset[str] = frozenset()

    @classmethod
    def read(cls, cpuinfo: str | None = None) -> "CPUInfo":
        """From /proc/cpuinfo (Linux), or from the given text; nothing is known where it cannot be read."""
        if cpuinfo is None:
            try:
                cpuinfo = Path("/proc/cpuinfo").read_text()
            except OSError:
                return cls()
        fields = {}
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
        return cls(fields.get("model name", "unknown"), frozenset(fields.get("flags", fields.get("Features", "")).split()))


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The `flags` of the first processor in /proc/cpuinfo (or of the given text)."""
    return set(CPUInfo.read(cpuinfo).flags)


def isa(flags: set[str]) -> list[str]:
    """The instruction sets of ISA_ORDER that the flags show, most capable first."""
    found = set()
    if {"amx_tile", "amx_bf16"} <= flags or {"amx_tile", "amx_int8"} <= flags:
        found.add("amx")
    found |= {name for name in ("avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2") if name in flags}
    return [name for name in ISA_ORDER if name in found]


def has_bf16(found: list[str]) -> bool:
    """bf16 matrix work in hardware (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    return "amx" in found or "avx512_bf16" in found


def has_vnni(found: list[str]) -> bool:
    """int8 dot products that do not saturate (VNNI or AMX)."""
    return bool({"amx", "avx512_vnni", "avx_vnni"} & set(found))


def machine() -> dict:
    """This machine, as benchmarks and training runs name it: CPU model, cores, memory, ISA, versions."""
    cpu = CPUInfo.read()
    try:
        memory_kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                              if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        memory_kib = 0
    versions = {"python": platform.python_version()}
    for package in ("torch", "onnxruntime", "transformers", "accelerate", "numpy", "onnx", "tritonclient",
                    "nvidia-pytriton"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    versions["tritonserver"] = "2.51.0 (bundled in nvidia-pytriton 0.7.0)"
    return {
        "cpu": cpu.model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 2**20, 1),
        "isa": isa(set(cpu.flags)),
        "kernel": platform.release(),
        "versions": versions,
    }
