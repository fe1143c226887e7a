"""Command-line interface: one module per verb, dispatched by :mod:`damofd.cli.main`."""
