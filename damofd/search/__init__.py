"""damofd.search stage (see the package docstring of damofd)."""
