"""Shared, cached zoo models for the tests/test_models_*.py files (built once per session).

Tests must not modify these modules; copy them (``copy.deepcopy``) before mutating.
"""

from __future__ import annotations

from functools import cache

import torch

from damofd.models import SCRFD, create_model


@cache
def zoo_model(name: str) -> SCRFD:
    torch.manual_seed(0)
    model = create_model(name)
    model.eval()
    return model
