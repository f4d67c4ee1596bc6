"""The `hermesd` command: the composition root that wires settings, runtime and server."""

from __future__ import annotations

import click

from hermesd.cli.adapters_cmd import adapters_group
from hermesd.cli.catalog_cmd import catalog_group
from hermesd.cli.chat import chat_command
from hermesd.cli.doctor import doctor_command
from hermesd.cli.install_service import install_service_command
from hermesd.cli.launch import launch_command
from hermesd.cli.models_cmd import models_command
from hermesd.cli.plan import plan_command
from hermesd.cli.ps import ps_command
from hermesd.cli.pull import pull_command
from hermesd.cli.serve import serve_command
from hermesd.cli.setup_gpu import setup_gpu_command
from hermesd.cli.tune import tune_command
from hermesd.cli.worker import worker_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hermesd")
def cli() -> None:
    """hermesd: a private Hermes 4 endpoint."""


for command in (
    serve_command,
    plan_command,
    pull_command,
    models_command,
    catalog_group,
    tune_command,
    adapters_group,
    install_service_command,
    setup_gpu_command,
    doctor_command,
    chat_command,
    ps_command,
    launch_command,
    worker_command,
):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
