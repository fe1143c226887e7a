"""Lazy package attributes (PEP 562): names resolved from their module on first access, so that
``import damofd.<stage>`` stays cheap (no torch import for the search, evaluation and ONNX paths).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str,
    names: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    public: list[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    ``names`` maps an attribute to the module defining it; a resolved value is cached in
    ``namespace`` (the package's ``globals()``) so later accesses are plain lookups.
    ``__dir__`` lists ``public`` (the package's ``__all__``), sorted.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
