"""What every Warren command line shares: one-line errors, never a usage dump
or a traceback (unless --debug), and a non-zero exit."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable


class CliError(Exception):
    """A user error found by the command line itself."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise CliError(f"{message} (see '{self.prog} --help')")


def run(prog: str, action: Callable[[], int], errors: tuple[type[BaseException], ...],
        debug: bool) -> int:
    """Run ``action``; expected ``errors`` become one line on stderr and exit 1."""
    try:
        return action()
    except (CliError, *errors) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
