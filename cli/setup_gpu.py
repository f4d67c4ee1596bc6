"""`hermesd setup-gpu`: rebuild the pinned llama-cpp-python with CUDA for this machine's GPUs.

pip builds llama.cpp for the CPU only (PyPI has only its source). This command finds the GPUs'
architectures (NVML, or --hardware / --archs for a machine you do not have), a CUDA toolkit
(runtime/cuda_toolkit.py), builds a wheel under the state directory, installs it only when the build
succeeded, and checks the result in a fresh process (runtime/engine/gpu_selftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from hermesd.cli.autoplan import UsageFailure, load_hardware
from hermesd.cli.hardware_option import hardware_option
from hermesd.runtime.cuda_toolkit import (
    PYPI_TOOLKIT_CUDA,
    Toolkit,
    ToolkitError,
    find_toolkit,
    has_cublas,
    prepare_pypi_toolkit,
)
from hermesd.runtime.engine.build import BuildError, BuildOptions, BuildPlan, build_plan, run_build
from hermesd.runtime.gpu_access import arch_of
from hermesd.runtime.hardware import Hardware
from hermesd.server.settings import ConfigFileError, load_settings

SELFTEST = "hermesd.runtime.engine.gpu_selftest"


def architectures(archs: str | None, hw: Hardware) -> tuple[str, ...]:
    """--archs "86,89" (or "8.6") as given; else one per distinct compute capability of the GPUs."""
    if archs:
        out = [a.strip().replace(".", "") for a in archs.replace(";", ",").split(",") if a.strip()]
        bad = [a for a in out if not a.rstrip("afv").isdigit()]
        if bad:
            raise UsageFailure(f"--archs: {', '.join(bad)} is not a CUDA architecture (e.g. 86 or 8.6)")
        return tuple(dict.fromkeys(out))
    found = [arch_of(g.compute_capability) for g in hw.gpus if g.compute_capability]
    if not found:
        where = "the profile" if hw.source != "discovered" else "NVML"
        raise UsageFailure(
            f"no NVIDIA GPU with a compute capability in {where}: nothing to build CUDA code for. "
            "Pass --archs (e.g. --archs 86) to build for a GPU this machine does not have"
        )
    return tuple(sorted(set(found), key=lambda a: int(a.rstrip("afv"))))


@click.command("setup-gpu")
@click.option("--dry-run", is_flag=True, help="print the toolkit, environment and commands; change nothing")
@click.option("--archs", default=None, help="CUDA architectures, e.g. 86,89 (default: the GPUs' own)")
@hardware_option("JSON hardware profile instead of NVML (build for a machine you do not have)")
@click.option(
    "--cuda-home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="CUDA toolkit to use (default: a system toolkit the driver supports, else PyPI's CUDA 13.0 wheels)",
)
@click.option("--cmake-flag", "cmake_flags", multiple=True, help="extra CMake flag, e.g. -DGGML_AVX512=off")
@click.option(
    "--cpu",
    "cpu_only",
    is_flag=True,
    help="build for the CPU only, with the RPC backend (a CPU-only `hermesd worker` or main host)",
)
@click.option("--source", default=None, help="build from this llama-cpp-python sdist or source tree")
@click.option("--jobs", type=click.IntRange(1), default=None, help="parallel compile jobs (default: CMake's)")
@click.option("--rebuild", is_flag=True, help="build again even if a wheel with these options is kept")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where builds are kept (default: HERMESD_STATE_DIR or ~/.local/share/hermesd)",
)
def setup_gpu_command(
    dry_run: bool,
    archs: str | None,
    hardware_file: Path | None,
    cuda_home: Path | None,
    cmake_flags: tuple[str, ...],
    source: str | None,
    jobs: int | None,
    rebuild: bool,
    state_dir: Path | None,
    cpu_only: bool,
) -> None:
    """Rebuild the engine (llama-cpp-python) with CUDA for this machine's NVIDIA GPUs."""
    # paths and pip requirements hold square brackets: no rich markup
    console = Console(soft_wrap=True, markup=False, highlight=False)
    if cpu_only:
        options = BuildOptions(rpc=True, cmake_flags=cmake_flags, source=source, jobs=jobs)
        state = state_dir_of(state_dir)
        build_cpu(console, build_plan(options, state, python=sys.executable), state, dry_run, rebuild)
        return
    hw = load_hardware(hardware_file)
    chosen = architectures(archs, hw)
    try:
        toolkit = find_toolkit(cuda_home=cuda_home, driver_cuda=hw.cuda_version, python=sys.executable)
    except ToolkitError as exc:
        raise click.ClickException(str(exc)) from exc
    state = state_dir_of(state_dir)
    options = BuildOptions(
        cuda=True,
        archs=chosen,
        cmake_flags=cmake_flags,
        cuda_home=toolkit.home,
        source=source,
        jobs=jobs,
        rpc=True,  # RPC workers and their main host (`hermesd worker`, `serve --worker`)
    )
    plan = build_plan(options, state, python=sys.executable)
    # a profile describes GPUs this machine may not have: the check then only loads the engine
    expect_gpus = len(hw.gpus) if hardware_file is None else 0
    show(console, hw, toolkit, plan, expect_gpus)
    if dry_run:
        return
    started = time.monotonic()
    if toolkit.route == "pypi":
        install_pypi_toolkit(console, toolkit)
    elif not has_cublas(toolkit):
        raise click.ClickException(
            f"the toolkit at {toolkit.home} has no cuBLAS (libcublas.so), which llama.cpp's CUDA backend "
            "links: install it (e.g. the cuda-libraries-dev package) or pass --cuda-home"
        )
    wheel = None if rebuild else plan.kept_wheel()
    if wheel is not None:
        console.print(f"reusing the wheel built earlier with the same options: {wheel}")
    else:
        wheel = build(console, plan)
    console.print(f"installing {wheel.name} …")
    result = subprocess.run(plan.install_command(wheel), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"pip could not install {wheel}: {result.stderr.strip()[-800:]}")
    verify(console, expect_gpus, state)
    console.print(f"done in {(time.monotonic() - started) / 60:.1f} minutes")


def build_cpu(console: Console, plan: BuildPlan, state: Path, dry_run: bool, rebuild: bool) -> None:
    """--cpu: no toolkit; the same build, install and check, expecting no GPU."""
    console.print(f"build: {plan.options.describe()}")
    console.print(f"wheel kept in: {plan.wheel_dir}  (build log: {plan.log_path})")
    for line in plan.shell_lines():
        console.print(f"  {line}")
    if dry_run:
        return
    started = time.monotonic()
    wheel = None if rebuild else plan.kept_wheel()
    if wheel is None:
        wheel = build(console, plan)
    console.print(f"installing {wheel.name} …")
    result = subprocess.run(plan.install_command(wheel), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"pip could not install {wheel}: {result.stderr.strip()[-800:]}")
    verify(console, 0, state)
    console.print(f"done in {(time.monotonic() - started) / 60:.1f} minutes")


def state_dir_of(flag: Path | None) -> Path:
    """--state-dir, else the daemon's (HERMESD_STATE_DIR, the config file, the default)."""
    try:
        return load_settings({"state_dir": flag} if flag else {}).state_dir
    except (ConfigFileError, ValueError) as exc:
        raise UsageFailure(f"settings: {exc}") from exc


def show(console: Console, hw: Hardware, toolkit: Toolkit, plan: BuildPlan, expect_gpus: int) -> None:
    gpus = ", ".join(f"GPU {g.index} {g.name} (compute {g.compute_capability})" for g in hw.gpus) or "none"
    console.print(f"GPUs ({hw.source}): {gpus}")
    if hw.driver_version or hw.cuda_version:
        console.print(f"driver: {hw.driver_version or '?'} (supports CUDA {hw.cuda_version or '?'})")
    console.print(f"build: {plan.options.describe()}")
    console.print(f"toolkit: {toolkit.describe()}")
    for note in toolkit.notes:
        console.print(f"  note: {note}")
    console.print(f"wheel kept in: {plan.wheel_dir}  (build log: {plan.log_path})")
    console.print("commands:")
    for command in toolkit.install:
        console.print(f"  {' '.join(command)}")
    if toolkit.route == "pypi":
        console.print(f"  (link lib64 -> lib and unversioned .so names under {toolkit.home})")
    for line in plan.shell_lines():
        console.print(f"  {line}")
    console.print(f"  {sys.executable} -m {SELFTEST} --expect-gpus {expect_gpus}")


def install_pypi_toolkit(console: Console, toolkit: Toolkit) -> None:
    console.print(f"installing NVIDIA's CUDA {PYPI_TOOLKIT_CUDA} toolkit wheels (about 1 GB) …")
    for command in toolkit.install:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise click.ClickException(f"{' '.join(command)} failed: {result.stderr.strip()[-800:]}")
    try:
        for line in prepare_pypi_toolkit(toolkit.home):
            console.print(f"  linked {line}")
    except OSError as exc:
        raise click.ClickException(f"cannot prepare the toolkit at {toolkit.home}: {exc}") from exc


def build(console: Console, plan: BuildPlan) -> Path:
    console.print(f"building {plan.options.describe()}; this takes a while (log: {plan.log_path})")
    with console.status("compiling llama.cpp …") as status:

        def progress(line: str) -> None:
            if line.strip():
                status.update(f"compiling llama.cpp … {line.strip()[:100]}")

        try:
            return run_build(plan, dict(os.environ), progress)
        except BuildError as exc:
            raise click.ClickException(f"the build failed; the installed engine is unchanged. {exc}") from exc


def verify(console: Console, expect_gpus: int, state: Path) -> None:
    """A fresh process loads the new engine: the probe, a tiny model on the GPUs, logits vs the CPU."""
    console.print("checking the new engine in a fresh process …")
    proc = subprocess.run(
        [sys.executable, "-m", SELFTEST, "--expect-gpus", str(expect_gpus)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": proc.stderr.strip()[-800:]}
    if not result.get("ok"):
        raise click.ClickException(f"the new engine failed its check: {result.get('error')}")
    console.print(f"  {result.get('engine')}")
    if "max_logit_diff" in result:
        console.print(
            f"  tiny model: layers {result['layers']}, 8 tokens decoded, GPU vs CPU logits max diff "
            f"{result['max_logit_diff']:.2g}"
        )
    subprocess.run(
        [sys.executable, "-c", _RECORD, str(state)], capture_output=True, text=True, timeout=120, check=False
    )


# records the new engine for `hermesd doctor`, from a process that loaded it
_RECORD = (
    "import sys; from pathlib import Path; "
    "from hermesd.runtime.engine.capabilities import probe_capabilities, save_record; "
    "save_record(Path(sys.argv[1]), probe_capabilities())"
)
