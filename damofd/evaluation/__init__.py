"""damofd.evaluation stage (see the package docstring of damofd)."""
