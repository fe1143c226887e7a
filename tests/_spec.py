"""Reference values from the spec shared by several test modules (written out, never imported
from the package under test, so a wrong table in ``damofd`` cannot make its own check pass)."""

from __future__ import annotations

# reference spec §3.1: the four released DamoFD backbones
RELEASED_STRUCTURES: dict[str, str] = {
    "0.5g": "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE1K7(32,64,2,40,1)"
    "SuperResIDWE1K7(64,120,2,40,2)SuperResIDWE1K5(120,160,2,120,1)",
    "2.5g": "SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(24,32,2,24,4)SuperResK3K3(32,56,2,16,4)"
    "SuperResK5K5(56,88,2,8,5)SuperResK1K5K1(88,128,2,8,4)",
    "10g": "SuperConvK3BNRELU(3,56,2,2)SuperResK1K3K1(56,80,2,40,5)SuperResK1K5K1(80,112,2,32,5)"
    "SuperResK1K3K1(112,168,2,16,4)SuperResK7K7(168,256,2,8,1)",
    "34g": "SuperConvK3BNRELU(3,56,2,2)SuperResK1K3K1(56,224,2,80,5)"
    "SuperResK1K3K1(224,488,2,40,6)SuperResK1K3K1(488,624,2,72,4)"
    "SuperResK1K7K1(624,816,2,24,3)",
}
