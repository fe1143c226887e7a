"""Detection heads."""

from damofd.models.heads.scrfd_head import SCRFDHead

__all__ = ["SCRFDHead"]
