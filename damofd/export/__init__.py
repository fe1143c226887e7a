"""damofd.export stage (see the package docstring of damofd)."""
