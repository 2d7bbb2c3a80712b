"""What the CPU image's virtualenv carries and serving never runs, removed after the install
(deploy/docker/cpu.Dockerfile; tests/test_deploy_container.py checks that the image still serves,
compiles a step for the CPU with OpenVINO, and imports everything the steps import).

    python prune.py /opt/venv

- the bundled server's Python-backend stubs for other Pythons than this one, and the libpython
  that only the 3.13 stub binds (the server runs the stub of the interpreter it is started from:
  serving/bundled.py);
- OpenVINO's GPU and NPU plugins and the GPU plugin's kernel cache (a CPU image), and its readers
  of TensorFlow, TFLite, PaddlePaddle, PyTorch, JAX and GGUF models (the export writes ONNX: the
  ONNX and IR readers and the CPU, AUTO, HETERO and batching plugins stay);
- the packages' own test suites (`tests` folders inside packages).

Standard library only; prints what it removed and how much.
"""

import shutil
import sys
import sysconfig
from pathlib import Path

OPENVINO_UNUSED = (
    "libopenvino_intel_gpu_plugin.so", "libopenvino_intel_npu_plugin.so", "cache.json",
    *(f"libopenvino_{reader}_frontend.so*" for reader in ("tensorflow", "tensorflow_lite", "paddle", "pytorch",
                                                          "jax", "gguf")),
)


def site_packages(venv: Path) -> Path:
    [found] = venv.glob("lib/python3*/site-packages")
    return found


def unused(packages: Path, version: str) -> list[Path]:
    found = []
    stubs = packages / "pytriton/tritonserver/python_backend_stubs"
    if (stubs / version).is_dir():  # never leave the server without a stub
        found += [path for path in stubs.iterdir() if path.name != version]
        minor = version.split(".")[1]
        found += [path for path in (packages / "nvidia_pytriton.libs").glob("libpython3-*.so*")
                  if f".{minor}.so" not in path.name]
    libraries = packages / "openvino/libs"
    if (libraries / "libopenvino_intel_cpu_plugin.so").is_file():
        found += [path for pattern in OPENVINO_UNUSED for path in libraries.glob(pattern)]
    found += [path for path in packages.glob("*/**/tests") if path.is_dir() and (path.parent / "__init__.py").exists()]
    return sorted(set(found))


def size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
    return path.lstat().st_size


def main(argv: list[str]) -> int:
    [venv] = argv
    packages = site_packages(Path(venv))
    version = sysconfig.get_python_version()
    removed = 0
    for path in unused(packages, version):
        if not path.exists():  # inside a folder removed before it
            continue
        removed += size(path)
        print(f"prune: {path.relative_to(packages)}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(f"prune: {removed / 1e6:.0f} MB that serving never uses removed from {packages}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
