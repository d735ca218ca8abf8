"""Entry points: build the Beam pipeline from a config and run it; the `potstill` CLI."""
