import click


@click.group()
def cli() -> None:
    """hermesd: a private Hermes 4 endpoint."""


def main() -> None:
    cli()
