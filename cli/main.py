"""The `hermesd` command: the composition root that wires settings, runtime and server."""

from __future__ import annotations

import click

from hermesd.cli.install_service import install_service_command
from hermesd.cli.serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hermesd")
def cli() -> None:
    """hermesd: a private Hermes 4 endpoint."""


cli.add_command(serve_command)
cli.add_command(install_service_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
