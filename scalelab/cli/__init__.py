"""The ``scalelab`` command line: :mod:`scalelab.cli.cli` and one module per subcommand."""
