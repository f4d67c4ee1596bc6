"""Building llama-cpp-python (the engine) with the options this machine needs.

`BuildOptions` says what to build (CUDA on or off, CUDA architectures, extra CMake flags such as
`-DGGML_RPC=on`, the source); `build_plan` turns it into the environment and commands, which
`hermesd setup-gpu --dry-run` prints and `run_build` runs. The wheel is built first, with
`pip wheel --no-cache-dir` (pip's cache would hand back the CPU-only wheel it built at install time)
into `<state-dir>/engine-builds/<key>/`, and installed only when the build succeeded, so a failed
build leaves the working engine in place and a reinstall of the same build takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hermesd.runtime.engine.capabilities import TESTED_LLAMA_CPP_PYTHON

log = logging.getLogger(__name__)
PACKAGE = "llama-cpp-python"
BUILDS_DIR = "engine-builds"


class BuildError(RuntimeError):
    """The build failed; the message names the log file and quotes its last lines."""


@dataclass(frozen=True)
class BuildOptions:
    cuda: bool = False
    archs: tuple[str, ...] = ()  # CMake spelling: "86", "89", "120a"
    cmake_flags: tuple[str, ...] = ()
    cuda_home: Path | None = None
    source: str | None = None  # a local sdist or source tree instead of PyPI's
    version: str = TESTED_LLAMA_CPP_PYTHON
    jobs: int | None = None
    # llama.cpp's RPC backend: `hermesd worker` and `serve --worker` need it (setup-gpu turns it on)
    rpc: bool = False

    def cmake_args(self) -> list[str]:
        args: list[str] = []
        if self.cuda:
            args.append("-DGGML_CUDA=on")
            if self.archs:
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(self.archs)}")
            if self.cuda_home is not None:
                home = self.cuda_home
                lib = home / "lib64" if (home / "lib64").is_dir() else home / "lib"
                args += [
                    f"-DCMAKE_CUDA_COMPILER={home / 'bin' / 'nvcc'}",
                    f"-DCUDAToolkit_ROOT={home}",
                    # libggml-cuda finds libcublas/libcudart here at run time: no LD_LIBRARY_PATH
                    # needed, also not under the systemd unit
                    f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath,{lib}",
                ]
        else:
            args.append("-DGGML_CUDA=off")
        if self.rpc and "-DGGML_RPC=on" not in self.cmake_flags:
            args.append("-DGGML_RPC=on")
        return [*args, *self.cmake_flags]

    def requirement(self) -> str:
        return self.source or f"{PACKAGE}=={self.version}"

    def key(self) -> str:
        """Names the build folder: same options, same wheel."""
        doc = [self.requirement(), self.cmake_args(), sys.version_info[:2]]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:12]

    def describe(self) -> str:
        what = f"CUDA for architectures {', '.join(self.archs) or 'CMake default'}" if self.cuda else "CPU"
        what += " and RPC" if self.rpc or "-DGGML_RPC=on" in self.cmake_flags else ""
        return f"{self.requirement()} with {what}"


@dataclass(frozen=True)
class BuildPlan:
    options: BuildOptions
    env: dict[str, str]  # added to the environment of the build
    wheel_command: tuple[str, ...]
    wheel_dir: Path
    log_path: Path
    python: str
    path_prefix: tuple[str, ...] = field(default=())  # folders put first on PATH

    def install_command(self, wheel: Path) -> tuple[str, ...]:
        return (self.python, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel))

    def kept_wheel(self) -> Path | None:
        """A wheel an earlier run built with the same options."""
        wheels = sorted(self.wheel_dir.glob("llama_cpp_python-*.whl"))
        return wheels[-1] if wheels else None

    def shell_lines(self) -> list[str]:
        """The build as shell commands, for --dry-run."""
        lines = [f"export {k}={_shell_value(v)}" for k, v in self.env.items()]
        if self.path_prefix:
            lines.append(f'export PATH={shlex.quote(":".join(self.path_prefix))}:"$PATH"')
        lines.append(shlex.join(self.wheel_command))
        lines.append(
            shlex.join(self.install_command(self.wheel_dir / "llama_cpp_python-*.whl")).replace("'", "")
        )
        return lines


def _shell_value(value: str) -> str:
    """Readable quoting for --dry-run: double quotes where nothing inside them is special."""
    if value == shlex.quote(value):
        return value
    return f'"{value}"' if not any(c in value for c in '"$`\\') else shlex.quote(value)


def build_plan(options: BuildOptions, state_dir: Path, *, python: str = sys.executable) -> BuildPlan:
    wheel_dir = state_dir / BUILDS_DIR / options.key()
    env = {"CMAKE_ARGS": shlex.join(options.cmake_args()), "FORCE_CMAKE": "1"}
    prefix: tuple[str, ...] = ()
    if options.cuda and options.cuda_home is not None:
        env["CUDA_HOME"] = str(options.cuda_home)
        env["CUDACXX"] = str(options.cuda_home / "bin" / "nvcc")
        prefix = (str(options.cuda_home / "bin"),)
    if options.jobs:
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(options.jobs)
    command = [python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "-w", str(wheel_dir)]
    if options.source is None:
        command += ["--no-binary", PACKAGE]
    command.append(options.requirement())
    return BuildPlan(
        options=options,
        env=env,
        wheel_command=tuple(command),
        wheel_dir=wheel_dir,
        log_path=wheel_dir / "build.log",
        python=python,
        path_prefix=prefix,
    )


def run_logged(
    command: tuple[str, ...],
    env: dict[str, str],
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run `command`, appending its output to `log_path` (and handing each line to `on_line`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            out.write(line)
            tail = [*tail[-19:], line.rstrip()]
            if on_line is not None:
                on_line(line.rstrip())
        code = proc.wait()
    if code != 0:
        last = "\n".join(f"  {t}" for t in tail[-8:])
        raise BuildError(f"`{' '.join(command[:4])} …` failed (exit {code}); full log: {log_path}\n{last}")


def build_env(plan: BuildPlan, base: dict[str, str]) -> dict[str, str]:
    env = {**base, **plan.env}
    if plan.path_prefix:
        env["PATH"] = ":".join([*plan.path_prefix, base.get("PATH", "")])
    return env


def run_build(
    plan: BuildPlan, base_env: dict[str, str], on_line: Callable[[str], None] | None = None
) -> Path:
    """Build the wheel (a failure raises BuildError and installs nothing); returns the wheel."""
    plan.wheel_dir.mkdir(parents=True, exist_ok=True)
    for old in plan.wheel_dir.glob("llama_cpp_python-*.whl"):
        old.unlink()
    run_logged(plan.wheel_command, build_env(plan, base_env), plan.log_path, on_line)
    wheel = plan.kept_wheel()
    if wheel is None:
        raise BuildError(f"pip reported success but left no wheel in {plan.wheel_dir}; log: {plan.log_path}")
    return wheel
