"""Bad input from the user, and the one way the commands report it: one line, exit status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: printed as one line, exit status 2. A ValueError, so that code
    calling the libraries directly may catch it as one."""


def fail(problem) -> None:
    """Print `problem` (an exception or a message) as one line on stderr and exit with status 2."""
    import typer
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False,
                               soft_wrap=True)
    raise typer.Exit(2)
