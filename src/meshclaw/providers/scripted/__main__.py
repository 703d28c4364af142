"""``python -m meshclaw.providers.scripted --script FILE``: serve a script without the CLI.

Handy when the ``meshclaw`` command is not wired up yet or a test harness wants the
server in a separate process; ``meshclaw model-server`` calls the same ``serve()``.
"""

from __future__ import annotations

import argparse
import sys

from meshclaw.errors import ConfigError
from meshclaw.providers.scripted.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshclaw.providers.scripted")
    parser.add_argument("--script", required=True, help="YAML or JSON script file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    args = parser.parse_args(argv)
    try:
        serve(args.script, args.host, args.port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
