"""Shared fixtures for the search tests (no tests here): released strings, hypothesis strategies."""

from __future__ import annotations

from hypothesis import strategies as st

from damofd.search.structure import BLOCK_TYPES, Block, BlockKind, Structure
from tests._spec import RELEASED_STRUCTURES

RELEASED = RELEASED_STRUCTURES  # spec §3.1

SEEDS = {  # init strings of DDSAR/scripts/DamoFd_*.sh (spec §2.7)
    "0.5g": "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(8,32,2,8,1)SuperResIDWE4K3(32,48,2,32,1)"
    "SuperResIDWE1K3(48,96,2,48,1)SuperResIDWE1K3(96,128,2,96,1)",
    "2.5g": "SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(32,32,2,32,3)SuperResK3K3(32,48,2,64,2)"
    "SuperResK3K3(48,64,2,128,2)SuperResK3K3(64,128,2,16,3)",
    "10g": "SuperConvK3BNRELU(3,24,2,1)SuperResK3K3(24,48,2,64,5)SuperResK3K3(48,64,2,64,5)"
    "SuperResK3K3(64,96,2,128,3)SuperResK3K3(96,128,2,16,1)",
    "34g": "SuperConvK3BNRELU(3,56,2,2)SuperResK3K3(56,112,2,96,5)SuperResK3K3(112,224,2,96,5)"
    "SuperResK3K3(224,448,2,128,3)SuperResK3K3(448,1024,2,16,1)",
}

_TYPES = sorted(BLOCK_TYPES)


@st.composite
def blocks(
    draw: st.DrawFn, cin: int | None = None, tags: bool = False, min_channels: int = 1
) -> Block:
    channels = st.integers(min_value=min_channels, max_value=640)
    btype = BLOCK_TYPES[draw(st.sampled_from(_TYPES))]
    btn = None if btype.kind is BlockKind.CONV else draw(channels)
    tag = draw(st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)))
    return Block(
        btype,
        draw(channels) if cin is None else cin,
        draw(channels),
        draw(st.sampled_from((1, 2))),
        btn,
        draw(st.integers(min_value=1, max_value=8)),
        tag if tags else None,
    )


@st.composite
def structures(
    draw: st.DrawFn,
    min_blocks: int = 1,
    max_blocks: int = 6,
    chained: bool = True,
    tags: bool = False,
    min_channels: int = 1,
) -> Structure:
    n = draw(st.integers(min_value=min_blocks, max_value=max_blocks))
    out: list[Block] = []
    for _ in range(n):
        cin = out[-1].out_channels if (chained and out) else None
        out.append(draw(blocks(cin=cin, tags=tags, min_channels=min_channels)))
    return Structure(tuple(out))
