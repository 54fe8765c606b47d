"""The ``taskspace`` program (commands in :mod:`taskspace.cli.main`)."""

import gc
import os
import sys


# Not named ``main``: that is the module of the commands.
def run() -> None:
    """Run the ``taskspace`` command (the program's entry point).

    A client command lives a fraction of a second, and its start-up and exit are most of what a
    developer waits for (``ws launch --wait`` on a warm pool). The cyclic garbage collector is
    off while the modules load (they make many objects and no garbage) and then sees only what
    the command makes. A client command ends without tearing the interpreter down, once its
    output is flushed: there is nothing to clean up that the end of the process does not.
    Together they take a fifth off loading the commands and exiting. Commands that open the server's side
    (``up``, ``admin rotate-key``) end the usual way, with logging flushed and threads joined."""
    gc.disable()
    try:
        import taskspace.cli.main as commands
    finally:
        gc.enable()
    gc.freeze()
    try:
        commands.app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if commands.server_side:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # as sys.exit reports it
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away; a closed stream
        pass
    os._exit(code)
