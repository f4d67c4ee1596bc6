"""`hermesd install-service`: install the hardened systemd unit and its environment file.

The unit in systemd/hermesd.service names `/usr/local/bin/hermesd`; this command writes it with the
absolute path of the hermesd actually running (or `--exec`) in ExecStart, so a virtual environment in
/opt works. The environment file holds the operator's settings and secrets, so an existing one is
never overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import click

UNIT_NAME = "hermesd.service"
UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
ENV_PATH = Path("etc/hermesd/hermesd.env")
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "systemd"
# ProtectHome=yes makes these invisible to the service.
HIDDEN_BY_SANDBOX = (Path("/home"), Path("/root"), Path("/run/user"))
_EXEC_START = re.compile(r"^(ExecStart=[-@:+!]*)(\S+)", re.MULTILINE)


def find_executable() -> Path:
    """The hermesd script this process runs from, else the one on PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "hermesd" and argv0.is_file() and os.access(argv0, os.X_OK):
        return argv0.resolve()
    found = shutil.which("hermesd")
    if found is None:
        raise click.ClickException("cannot find the hermesd executable; pass --exec /path/to/hermesd")
    return Path(found).resolve()


def quote_exec_path(path: Path) -> str:
    """Write `path` as the first word of ExecStart= (systemd's quoting and % and $ escapes)."""
    text = str(path)
    if not path.is_absolute():
        raise click.ClickException(f"{text}: ExecStart needs an absolute path")
    if any(c in text for c in "\"'\\") or not text.isprintable():
        raise click.ClickException(f"{text}: quotes, backslashes or control characters in the path")
    text = text.replace("%", "%%").replace("$", "$$")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def render_unit(template: str, executable: Path) -> str:
    """The unit text with every ExecStart= running `executable` instead of the template's path."""
    if not _EXEC_START.search(template):
        raise click.ClickException("the unit template has no ExecStart= line")
    word = quote_exec_path(executable)
    return _EXEC_START.sub(lambda m: m.group(1) + word, template)


def sandbox_warnings(executable: Path) -> list[str]:
    """Problems the unit's sandbox would cause for this executable (and its #! interpreter)."""
    paths = [executable]
    try:
        with executable.open("rb") as f:
            first = f.readline(512)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", errors="replace").split()
        if words:
            paths.append(Path(words[0]))
    warnings = []
    for path in paths:
        hidden = next((h for h in HIDDEN_BY_SANDBOX if path == h or h in path.parents), None)
        if hidden is not None:
            warnings.append(
                f"{path} is under {hidden}, which the service cannot see (ProtectHome=yes); install "
                "hermesd in a world-readable environment such as /opt/hermesd, or relax it with "
                "`systemctl edit hermesd` (ProtectHome=read-only)"
            )
    return warnings


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_template(name: str) -> str:
    path = TEMPLATE_DIR / name
    try:
        return (resources.files("hermesd.systemd") / name).read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise click.ClickException(
            f"{path}: cannot read the template ({exc}); install-service needs hermesd's source "
            "tree, or copy systemd/hermesd.service and systemd/hermesd.env by hand"
        ) from None


def _run_systemctl(*args: str) -> None:
    command = ["systemctl", *args]
    click.echo("$ " + " ".join(command))
    try:
        result = subprocess.run(command, check=False)
    except OSError as exc:
        raise click.ClickException(f"cannot run systemctl: {exc.strerror}") from None
    if result.returncode != 0:
        raise click.ClickException(f"`{' '.join(command)}` failed with exit code {result.returncode}")


@click.command("install-service")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Install under this root instead of / (for packaging and tests).",
)
@click.option(
    "--exec",
    "executable",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The hermesd executable for ExecStart (default: the one running).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option("--now", is_flag=True, help="Also run systemctl daemon-reload and enable --now hermesd.")
def install_service_command(prefix: Path, executable: Path | None, dry_run: bool, now: bool) -> None:
    """Install the hardened systemd service for `hermesd serve`."""
    if now and (dry_run or prefix.resolve() != Path("/")):
        raise click.UsageError("--now only works for a real install (no --dry-run, --prefix /)")
    exe = executable.resolve() if executable is not None else find_executable()
    if not os.access(exe, os.X_OK):
        raise click.ClickException(f"{exe}: not executable")
    unit = render_unit(_read_template(UNIT_NAME), exe)
    env_text = _read_template("hermesd.env")
    unit_path, env_path = prefix / UNIT_PATH, prefix / ENV_PATH
    for warning in sandbox_warnings(exe):
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        click.echo(f"would write {unit_path}:\n{unit}")
        click.echo(f"would keep {env_path}" if env_path.exists() else f"would write {env_path} (mode 0600)")
        return
    try:
        _write_atomic(unit_path, unit, 0o644)
        click.echo(f"wrote {unit_path} (ExecStart={exe} serve)")
        if env_path.exists():
            click.echo(f"kept existing {env_path}")
        else:
            # API keys go in here: root-only; systemd reads it before it drops privileges.
            _write_atomic(env_path, env_text, 0o600)
            click.echo(f"wrote {env_path}")
    except OSError as exc:
        raise click.ClickException(
            f"{exc.filename}: {exc.strerror} (installing into {prefix} needs root: try sudo)"
        ) from None
    if now:
        _run_systemctl("daemon-reload")
        _run_systemctl("enable", "--now", UNIT_NAME)
        return
    click.echo(f"next: edit {env_path}, then run")
    click.echo("  sudo systemctl daemon-reload && sudo systemctl enable --now hermesd")
