"""Finding a CUDA toolkit to build llama.cpp with: three routes, in this order.

1. `--cuda-home DIR`: the user's choice, used as it is.
2. A system toolkit (`CUDA_HOME`, `CUDA_PATH`, the `nvcc` on PATH, /usr/local/cuda, /usr/local/cuda-*,
   /opt/cuda) that the driver supports: a toolkit newer than the driver's CUDA version builds code the
   driver cannot load ("CUDA driver version is insufficient"), so it is skipped with a note.
3. NVIDIA's CUDA 13.0 toolkit wheels from PyPI (`cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,cccl]`, one
   pinned release), installed into the current environment under `site-packages/nvidia/cu13`. They lack
   the `lib64 -> lib` link and the unversioned `libcudart.so`/`libcublas.so` names CMake looks for;
   `prepare_pypi_toolkit` adds them. At run time libggml-cuda finds `libcublas` through an rpath
   (runtime/engine/build.py), so no LD_LIBRARY_PATH is needed, also not under the systemd unit.

`libcuda` itself always comes from the driver. Everything takes its inputs (environment, search
paths, the driver's CUDA version) as arguments, so tests run each route on fake toolkit trees.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

PYPI_TOOLKIT_VERSION = "13.0.2"  # nvcc 13.0.88, cudart 13.0.96, cublas 13.1.0.3
PYPI_TOOLKIT_CUDA = "13.0"
PYPI_TOOLKIT_EXTRAS = ("nvcc", "crt", "nvvm", "cudart", "cublas", "cccl")
SYSTEM_CUDA_DIRS: tuple[str, ...] = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")
Route = Literal["cuda-home", "system", "pypi"]


class ToolkitError(RuntimeError):
    """No usable toolkit; the message says what was looked at and what to do."""


@dataclass(frozen=True)
class Toolkit:
    route: Route
    home: Path
    version: str | None  # "13.0"
    nvcc: Path
    install: tuple[tuple[str, ...], ...] = ()  # commands that bring it (the PyPI route)
    notes: tuple[str, ...] = ()

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib64" if (self.home / "lib64").is_dir() else self.home / "lib"

    def describe(self) -> str:
        version = f"CUDA {self.version}" if self.version else "CUDA (version unknown)"
        how = {"cuda-home": "--cuda-home", "system": "system toolkit", "pypi": "PyPI toolkit wheels"}
        return f"{version} at {self.home} ({how[self.route]})"


def pypi_toolkit_requirement() -> str:
    return f"cuda-toolkit[{','.join(PYPI_TOOLKIT_EXTRAS)}]=={PYPI_TOOLKIT_VERSION}"


def pypi_toolkit_home(site_packages: Path | None = None) -> Path:
    return (site_packages or Path(sysconfig.get_paths()["purelib"])) / "nvidia" / "cu13"


def is_toolkit(home: Path) -> bool:
    """A toolkit has nvcc and the runtime headers (a bare `bin/nvcc` wrapper elsewhere is not one)."""
    if not (home / "bin" / "nvcc").is_file():
        return False
    return (home / "include" / "cuda_runtime.h").is_file() or any(
        home.glob("targets/*/include/cuda_runtime.h")
    )


def toolkit_version(home: Path) -> str | None:
    """ "13.0" from version.json, the PyPI wheels' dist-info, or `nvcc --version`."""
    try:
        data = json.loads((home / "version.json").read_text(encoding="utf-8"))
        return _major_minor(
            str(data["cuda_nvcc"]["version"] if "cuda_nvcc" in data else data["cuda"]["version"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for info in sorted(home.glob("dist-info/nvidia_cuda_nvcc-*.dist-info")) + sorted(
        home.parent.parent.glob("nvidia_cuda_nvcc-*.dist-info")
    ):
        return _major_minor(info.name.split("-")[1])
    try:
        out = subprocess.run(
            [str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _major_minor(version: str) -> str | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _as_tuple(version: str | None) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def system_candidates(environ: Mapping[str, str], search: Sequence[str] = SYSTEM_CUDA_DIRS) -> list[Path]:
    """Where a system toolkit may be, most specific first, without duplicates."""
    out: list[Path] = []
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        if environ.get(name):
            out.append(Path(environ[name]))
    nvcc = shutil.which("nvcc", path=environ.get("PATH", ""))
    if nvcc:
        out.append(Path(nvcc).resolve().parent.parent)
    for pattern in search:
        if "*" in pattern:
            parent = Path(pattern).parent
            found = sorted(
                parent.glob(Path(pattern).name), key=lambda p: _as_tuple(p.name.split("-")[-1]) or (0,)
            )
            out.extend(reversed(found))  # newest first
        else:
            out.append(Path(pattern))
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def find_toolkit(
    *,
    cuda_home: Path | None,
    driver_cuda: str | None,
    environ: Mapping[str, str] | None = None,
    search: Sequence[str] | None = None,
    python: str = "python3",
    site_packages: Path | None = None,
) -> Toolkit:
    env = os.environ if environ is None else environ
    if cuda_home is not None:
        if not (cuda_home / "bin" / "nvcc").is_file():
            raise ToolkitError(f"--cuda-home {cuda_home}: no bin/nvcc there")
        return Toolkit("cuda-home", cuda_home, toolkit_version(cuda_home), cuda_home / "bin" / "nvcc")
    notes: list[str] = []
    driver = _as_tuple(driver_cuda)
    for home in system_candidates(env, SYSTEM_CUDA_DIRS if search is None else search):
        if not is_toolkit(home):
            continue
        version = toolkit_version(home)
        have = _as_tuple(version)
        if driver and have and have > driver:
            notes.append(
                f"skipped CUDA {version} at {home}: the driver supports CUDA {driver_cuda} at most "
                "(update the driver to use it)"
            )
            continue
        return Toolkit("system", home, version, home / "bin" / "nvcc", notes=tuple(notes))
    if driver and driver < (13, 0):
        raise ToolkitError(
            " ".join(notes) + " No CUDA toolkit the driver supports was found, and the PyPI toolkit is "
            f"CUDA {PYPI_TOOLKIT_CUDA}, newer than this driver (CUDA {driver_cuda}): update the NVIDIA "
            f"driver, or install a CUDA {driver_cuda} toolkit and pass --cuda-home"
        )
    home = pypi_toolkit_home(site_packages)
    notes.append(
        f"no system CUDA toolkit found: using NVIDIA's CUDA {PYPI_TOOLKIT_CUDA} toolkit wheels from PyPI"
    )
    return Toolkit(
        "pypi",
        home,
        PYPI_TOOLKIT_CUDA,
        home / "bin" / "nvcc",
        install=((python, "-m", "pip", "install", pypi_toolkit_requirement()),),
        notes=tuple(notes),
    )


def prepare_pypi_toolkit(home: Path, *, driver_lib_dirs: Sequence[Path] = ()) -> list[str]:
    """Make the wheels' tree look like a toolkit to CMake: `lib64 -> lib`, unversioned `.so` names, and
    `lib/stubs/libcuda.so` pointing at the driver's `libcuda.so.1`. Returns what it did."""
    done: list[str] = []
    lib = home / "lib"
    if not lib.is_dir():
        raise ToolkitError(f"{home}: no lib/ folder: the PyPI toolkit wheels are not installed there")
    if not (home / "lib64").exists():
        (home / "lib64").symlink_to("lib")
        done.append(f"{home / 'lib64'} -> lib")
    for versioned in sorted(lib.glob("lib*.so.*")):
        plain = lib / (versioned.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(versioned.name)
            done.append(f"{plain} -> {versioned.name}")
    stub = lib / "stubs" / "libcuda.so"
    if not stub.exists():
        for d in (*driver_lib_dirs, Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")):
            driver = d / "libcuda.so.1"
            if driver.exists():
                stub.parent.mkdir(exist_ok=True)
                stub.symlink_to(driver)
                done.append(f"{stub} -> {driver}")
                break
    return done


def has_cublas(toolkit: Toolkit) -> bool:
    return any(toolkit.lib_dir.glob("libcublas.so*")) or any(toolkit.home.glob("targets/*/lib/libcublas.so*"))
