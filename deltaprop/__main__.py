"""The ``deltaprop`` command: the console script's ``main`` and ``python -m deltaprop``.

This module imports nothing of the command's until ``main`` runs, and ``import deltaprop`` is light, so that a
Ctrl-C while the command still imports its code (NumPy, the backends, the models: most of its start-up) ends it as
it does once the command runs (deltaprop/cli.py): one line, exit status 130, never a traceback.
"""

import sys


def main(argv=None) -> int:
    try:
        from .cli import main as command

        return command(argv)
    except KeyboardInterrupt:  # one raised before cli.main catches its own (an import; bench's start-up)
        print("deltaprop: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT


if __name__ == "__main__":
    sys.exit(main())
