"""`hermesd setup-gpu`: each toolkit route on fake toolkit trees (--dry-run), the build function's
options and its wheel-first behaviour (with a stand-in for pip), and, slow, the real CUDA compiler of
this machine on a small kernel and on llama.cpp's CMake configuration (no GPU needed for either)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hermesd.cli import setup_gpu
from hermesd.runtime import cuda_toolkit
from hermesd.runtime.cuda_toolkit import Toolkit, find_toolkit, prepare_pypi_toolkit
from hermesd.runtime.engine.build import BuildError, BuildOptions, build_plan, run_build

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
CACHE = Path(__file__).resolve().parents[1] / ".cache"


def fake_toolkit(home: Path, version: str) -> Path:
    """bin/nvcc that prints a release line, the runtime header, version.json: enough to be found."""
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "lib").mkdir()
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {version}, V{version}.1'\n")
    nvcc.chmod(0o755)
    (home / "include" / "cuda_runtime.h").write_text("")
    (home / "version.json").write_text(json.dumps({"cuda": {"version": f"{version}.1"}}))
    return home


def profile(tmp_path: Path, *, cuda_version: str | None = None, name: str = "2x3090-24gb") -> Path:
    data = json.loads((PROFILES / f"{name}.json").read_text())
    if cuda_version:
        data["cuda_version"] = cuda_version
    path = tmp_path / "box.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def no_system_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine whose only toolkits are the ones a test puts under the returned folder."""
    root = tmp_path / "opt"
    root.mkdir()
    monkeypatch.setattr(cuda_toolkit, "SYSTEM_CUDA_DIRS", (str(root / "cuda"), str(root / "cuda-*")))
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("HERMESD_STATE_DIR", str(tmp_path / "state"))
    return root


def dry_run(*args: str) -> Result:
    return CliRunner().invoke(setup_gpu.setup_gpu_command, ["--dry-run", *args], env={"COLUMNS": "300"})


def test_dry_run_with_cuda_home(no_system_cuda: Path, tmp_path: Path) -> None:
    home = fake_toolkit(tmp_path / "my-cuda", "12.4")
    result = dry_run("--hardware", str(profile(tmp_path)), "--cuda-home", str(home))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"toolkit: CUDA 12.4 at {home} (--cuda-home)" in out
    assert "-DGGML_CUDA=on" in out and "-DCMAKE_CUDA_ARCHITECTURES=86" in out  # two RTX 3090s: 8.6
    assert f"-DCMAKE_CUDA_COMPILER={home}/bin/nvcc" in out and f"-Wl,-rpath,{home}/lib" in out
    assert "pip wheel --no-cache-dir" in out and "llama-cpp-python==0.3.36" in out
    assert "pip install --force-reinstall --no-deps" in out and "gpu_selftest --expect-gpus 0" in out
    assert str(tmp_path / "state" / "engine-builds") in out
    assert not (tmp_path / "state").exists()  # a dry run changes nothing


def test_dry_run_finds_the_newest_system_toolkit_the_driver_supports(
    no_system_cuda: Path, tmp_path: Path
) -> None:
    fake_toolkit(no_system_cuda / "cuda-12.4", "12.4")
    fake_toolkit(no_system_cuda / "cuda-12.8", "12.8")
    result = dry_run("--hardware", str(profile(tmp_path, cuda_version="12.6", name="mixed-4090-3060")))
    assert result.exit_code == 0, result.output
    assert f"CUDA 12.4 at {no_system_cuda / 'cuda-12.4'} (system toolkit)" in result.stdout
    assert "skipped CUDA 12.8" in result.stdout and "supports CUDA 12.6 at most" in result.stdout
    assert "-DCMAKE_CUDA_ARCHITECTURES=86;89" in result.stdout  # the 3060 and the 4090


def test_a_cuda_home_variable_is_a_system_toolkit(
    no_system_cuda: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fake_toolkit(tmp_path / "elsewhere", "13.0")
    monkeypatch.setenv("CUDA_HOME", str(home))
    result = dry_run("--hardware", str(profile(tmp_path)))
    assert f"CUDA 13.0 at {home} (system toolkit)" in result.stdout


def test_dry_run_without_a_system_toolkit_uses_the_pypi_wheels(no_system_cuda: Path, tmp_path: Path) -> None:
    (no_system_cuda / "cuda").mkdir()  # a folder without nvcc is not a toolkit
    result = dry_run("--hardware", str(profile(tmp_path)), "--archs", "8.9,120a")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(PyPI toolkit wheels)" in out and "nvidia/cu13" in out
    assert "pip install cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,cccl]==13.0.2" in out
    assert "lib64 -> lib" in out and "-DCMAKE_CUDA_ARCHITECTURES=89;120a" in out


def test_an_old_driver_cannot_use_the_pypi_toolkit(no_system_cuda: Path, tmp_path: Path) -> None:
    result = dry_run("--hardware", str(profile(tmp_path, cuda_version="12.2")))
    assert result.exit_code == 1
    assert "CUDA 13.0, newer than this driver (CUDA 12.2)" in result.stderr and "--cuda-home" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--hardware", str(PROFILES / "cpu-32gb.json")], "Pass --archs"),
        (["--archs", "sm86"], "is not a CUDA architecture"),
    ],
)
def test_nothing_to_build_for_is_a_usage_error(no_system_cuda: Path, args: list[str], message: str) -> None:
    result = dry_run(*args)
    assert result.exit_code == 2 and message in result.stderr


def test_pypi_toolkit_tree_gets_the_links_cmake_needs(tmp_path: Path) -> None:
    home = tmp_path / "nvidia" / "cu13"
    (home / "lib").mkdir(parents=True)
    for name in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        (home / "lib" / name).write_text("")
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "libcuda.so.1").write_text("")
    done = prepare_pypi_toolkit(home, driver_lib_dirs=[driver])
    assert (home / "lib64").resolve() == (home / "lib").resolve()
    assert os.readlink(home / "lib" / "libcublas.so") == "libcublas.so.13"
    assert (home / "lib" / "stubs" / "libcuda.so").resolve() == driver / "libcuda.so.1"
    assert len(done) == 5 and prepare_pypi_toolkit(home, driver_lib_dirs=[driver]) == []  # idempotent


def test_build_options() -> None:
    cpu = BuildOptions()
    assert cpu.cmake_args() == ["-DGGML_CUDA=off"]
    rpc = BuildOptions(cmake_flags=("-DGGML_RPC=on",))
    assert rpc.cmake_args() == ["-DGGML_CUDA=off", "-DGGML_RPC=on"] and rpc.key() != cpu.key()
    gpu = BuildOptions(cuda=True, archs=("86", "89"))
    assert gpu.cmake_args() == ["-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=86;89"]
    assert BuildOptions(source="/src/llama-cpp-python").requirement() == "/src/llama-cpp-python"


FAKE_PIP = """\
import sys
args = sys.argv[1:]
print("building ...", flush=True)
if "FAIL" in __import__("os").environ.get("CMAKE_ARGS", ""):
    print("nvcc fatal: something broke", flush=True)
    sys.exit(1)
out = args[args.index("-w") + 1]
open(out + "/llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl", "w").close()
"""


def test_the_wheel_is_built_first_and_a_failure_installs_nothing(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "pip.py"} "$@"\n')
    python.chmod(0o755)
    (tmp_path / "pip.py").write_text(FAKE_PIP)
    good = build_plan(BuildOptions(cuda=True, archs=("86",)), tmp_path / "state", python=str(python))
    assert good.kept_wheel() is None
    lines: list[str] = []
    wheel = run_build(good, dict(os.environ), lines.append)
    assert wheel.parent == good.wheel_dir and good.kept_wheel() == wheel and lines == ["building ..."]
    assert "$ " in good.log_path.read_text() and "building ..." in good.log_path.read_text()
    bad = build_plan(
        BuildOptions(cuda=True, cmake_flags=("-DFAIL=1",)), tmp_path / "state", python=str(python)
    )
    with pytest.raises(BuildError, match="nvcc fatal: something broke") as failure:
        run_build(bad, dict(os.environ))
    assert str(bad.log_path) in str(failure.value) and bad.kept_wheel() is None


# -- the real CUDA compiler of this machine (slow)

KERNEL = """\
#include <cstdio>
__global__ void add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
int main() {
    add<<<1, 1>>>(nullptr, nullptr, nullptr, 0);
    std::printf("%d\\n", (int) cudaGetLastError());
    return 0;
}
"""


def installed_toolkit() -> Toolkit:
    try:
        toolkit = find_toolkit(cuda_home=None, driver_cuda=None)
    except cuda_toolkit.ToolkitError as exc:
        pytest.skip(f"no CUDA toolkit: {exc}")
    if toolkit.route == "pypi" and not toolkit.nvcc.is_file():
        pytest.skip("no CUDA toolkit on this machine (nvcc not found)")
    return toolkit


def llama_cpp_source() -> Path:
    """The llama-cpp-python 0.3.36 source: HERMESD_LLAMA_CPP_SOURCE, the test cache, or PyPI's sdist."""
    if os.environ.get("HERMESD_LLAMA_CPP_SOURCE"):
        return Path(os.environ["HERMESD_LLAMA_CPP_SOURCE"])
    tree = CACHE / "sdist" / "llama_cpp_python-0.3.36"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    download = CACHE / "sdist" / "download"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(download),
         "llama-cpp-python==0.3.36"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    archives = sorted(download.glob("llama_cpp_python-0.3.36.tar.gz"))
    if proc.returncode != 0 or not archives:
        pytest.skip(f"llama-cpp-python 0.3.36 source not available: {proc.stderr.strip()[-200:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(tree.parent, filter="data")
    shutil.rmtree(download)
    return tree


@pytest.mark.slow
def test_nvcc_compiles_a_kernel(tmp_path: Path) -> None:
    toolkit = installed_toolkit()
    (tmp_path / "add.cu").write_text(KERNEL)
    proc = subprocess.run(
        [str(toolkit.nvcc), "-arch=sm_86", "-o", str(tmp_path / "add"), str(tmp_path / "add.cu")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "add").stat().st_size > 0


@pytest.mark.slow
def test_cmake_configures_llama_cpp_with_cuda(tmp_path: Path) -> None:
    """setup-gpu's CMake arguments on the real llama-cpp-python source: configure only, no build."""
    toolkit = installed_toolkit()
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    source = llama_cpp_source()
    args = BuildOptions(cuda=True, archs=("86",), cuda_home=toolkit.home).cmake_args()
    # Configuring needs the libraries the CUDA backend links; a toolkit without cuBLAS (a compiler-only
    # install) or a machine without a driver's libcuda gets empty stand-ins: nothing is linked here.
    stub: dict[str, Any] = {}
    for lib, name in (
        ("cublas", "libcublas.so"),
        ("cublasLt", "libcublasLt.so"),
        ("cuda_driver", "libcuda.so"),
    ):
        if not list(toolkit.lib_dir.glob(name)) and not list((toolkit.lib_dir / "stubs").glob(name)):
            stub[lib] = tmp_path / "stubs" / name
    if stub:
        (tmp_path / "stubs").mkdir()
        (tmp_path / "stubs" / "empty.c").write_text("void hermesd_stub(void) {}\n")
        for path in stub.values():
            subprocess.run(
                ["cc", "-shared", "-o", str(path), str(tmp_path / "stubs" / "empty.c")], check=True
            )
        args += [f"-DCUDA_{lib}_LIBRARY={path}" for lib, path in stub.items()]
    proc = subprocess.run(
        ["cmake", "-S", str(source), "-B", str(tmp_path / "build"), *args],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "The CUDA compiler identification is NVIDIA" in proc.stdout
    cache = (tmp_path / "build" / "CMakeCache.txt").read_text()
    assert "GGML_CUDA:BOOL=on" in cache and "Using CMAKE_CUDA_ARCHITECTURES=86 " in proc.stdout
