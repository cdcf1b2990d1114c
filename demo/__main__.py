"""``python -m demo``: run the local end-to-end demo (see docs/demo.md)."""

from demo.cli import main

main()
