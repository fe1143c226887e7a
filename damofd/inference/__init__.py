"""damofd.inference stage (see the package docstring of damofd)."""
