"""damofd.data stage (see the package docstring of damofd)."""
