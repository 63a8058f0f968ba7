"""Subcommands of the ``scalelab`` console script, one module each."""
