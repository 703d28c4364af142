"""``python -m meshclaw.connectors.servers NAME [--http PORT]``: one built-in MCP server."""

from __future__ import annotations

import argparse

from meshclaw.connectors.servers import SERVERS, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m meshclaw.connectors.servers")
    parser.add_argument("name", choices=SERVERS)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    serve(args.name, http_port=args.http, host=args.host)


if __name__ == "__main__":
    main()
