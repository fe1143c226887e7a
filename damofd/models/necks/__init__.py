"""Necks."""

from damofd.models.necks.pafpn import PAFPN

__all__ = ["PAFPN"]
