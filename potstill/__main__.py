"""`python -m potstill`: the `potstill` command (an entry point, above every floor)."""
import sys

from potstill.beam_pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
