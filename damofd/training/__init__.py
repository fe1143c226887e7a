"""damofd.training stage (see the package docstring of damofd)."""
