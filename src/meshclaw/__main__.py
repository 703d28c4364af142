"""``python -m meshclaw``: the same CLI as the ``meshclaw`` command."""

from meshclaw.cli.main import main

main()
