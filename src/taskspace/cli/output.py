"""What the CLI prints, through rich, imported on first use: a command whose answer is JSON for
a script (``ws launch --wait --json``, ``ws show --json``) never pays for rich's imports, a fifth
of a command's start-up."""

from __future__ import annotations

import json
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class LazyConsole:
    """A ``rich.console.Console`` made the first time one of its attributes is used."""

    def __init__(self, **options: Any):
        self.options = options

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(**self.options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


# Server text (ticket titles, reasons, names) is printed as written: markup only where asked for.
out = LazyConsole(markup=False)
err = LazyConsole(stderr=True, markup=False)


def escape(text: str) -> str:
    """``text`` with rich's markup escaped, to be printed where markup is on."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def table_of(*headers: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(*headers, **options)


def print_json(data: Any) -> None:
    """``data`` as indented JSON: highlighted in a terminal, plain for a pipe or a file."""
    if sys.stdout.isatty():
        out.print_json(json.dumps(data, default=str))
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
