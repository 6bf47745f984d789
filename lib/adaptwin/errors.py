"""Mistakes the user can fix, and how every command reports them: one line naming the file, the field and the
value, exit code 2.

Why a module of its own, at the bottom of the package: each box raises its own input error (a bad scenario,
calibration, workload, model folder or output folder), and every command line reports them alike. When that
rule lived in the top-level command line, the twin's own command imported a module that imports the placement
and the surrogates. Here each box's error subclasses `InputError`, and the rule catches that one base class.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


class InputError(ValueError):
    """Input a user can fix; the message names the file, the field and the value (exit 2 at the command line)."""


class UsageError(InputError):
    """A command-line mistake (a missing file, a bad flag value)."""


def one_line(text: object) -> str:
    """The first line of ``text`` (messages of nested errors can span several)."""
    return (str(text).strip().splitlines() or [""])[0]


def user_mistakes_exit_2(command: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a sub-command's entry point so that a user mistake prints one line and returns 2 even when it
    is called directly (tests, other tools), not only through `adaptwin.cli.main`."""
    def wrap(func: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except InputError as exc:
                print(f"adaptwin {command}: {one_line(exc)}", file=sys.stderr)
                return 2
        return run
    return wrap
