"""The ``instar`` command line, one module per topic; ``instar.cli.main`` gathers them."""
