"""damofd.models stage (see the package docstring of damofd)."""
