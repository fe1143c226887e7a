"""Baseline: an independent, deliberately literal re-implementation of the released DamoFD search.

It follows the structure of ``ly19965/DamoFD:DDSAR/evolution_search.py`` and the PlainNet code it
uses (spec §1.2, §2.2–§2.7) step by step, *without* any of damofd's shortcuts:

* every candidate is handled as a structure **string** and re-parsed for each check;
* super blocks are expanded into strings of basic layers (``ConvKX``, ``ConvDW``, ``BN``,
  ``RELU``, ``ResBlock``, ``ResBlockProj``) which are parsed into layer objects, and FLOPs,
  model size and layer count are summed over those layers (float accumulators, as PlainNet);
* DDSAR is computed from the block *strings* with regular expressions, as ``compute_sar_score``;
* the search space rebuilds and flattens its candidate lists on every mutation and draws with
  ``random.choice``; block indices and parents are drawn with ``random.randint``.

Two deliberate deviations, neither of which changes the algorithm's distribution:
the module-level ``random`` is replaced by an explicit ``random.Random(seed)``, and the
reference's ``list(set(...))`` (hash-order, differs between processes) by first-appearance
order. With those, a run is draw-for-draw identical to damofd's faithful mode
(``SearchConfig(dedup=False, proposals=1)``) — ``tests/test_search_reference.py`` checks that
— while sharing no code with damofd. What is *not* reproduced: building the torch model on a
GPU for every scored candidate (the main cost of the reference's 75-minute 0.5G search).

Usage::

    python benchmarks/reference_search.py --preset damofd-0.5g --iterations 96000 --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import sys
import time

# ---------------------------------------------------------------------------------------------
# PlainNet-style basic layers (only what the DamoFD super blocks expand into)
# ---------------------------------------------------------------------------------------------


def smart_round(x: float, base: int = 8) -> int:
    return max(base, round(x / base) * base)


def _matching_paren(s: str, open_idx: int) -> int:
    depth = 0
    for i in range(open_idx, len(s)):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {s!r}")


class ConvKX:
    def __init__(self, cin: int, cout: int, k: int, s: int) -> None:
        self.in_channels, self.out_channels, self.k, self.stride = cin, cout, k, s

    def out_res(self, r: int) -> int:
        return r // self.stride

    def flops(self, r: int) -> float:
        return self.in_channels * self.out_channels * self.k**2 * r**2 // self.stride**2

    def size(self) -> int:
        return self.in_channels * self.out_channels * self.k**2


class ConvDW:
    def __init__(self, c: int, k: int, s: int) -> None:
        self.in_channels = self.out_channels = c
        self.k, self.stride = k, s

    def out_res(self, r: int) -> int:
        return r // self.stride

    def flops(self, r: int) -> float:
        return self.out_channels * self.k**2 * r**2 // self.stride**2

    def size(self) -> int:
        return self.out_channels * self.k**2


class BN:
    def __init__(self, c: int) -> None:
        self.in_channels = self.out_channels = c

    def out_res(self, r: int) -> int:
        return r

    def flops(self, r: int) -> float:
        return r**2 * self.out_channels

    def size(self) -> int:
        return self.out_channels


class RELU(BN):
    def flops(self, r: int) -> float:
        return 0

    def size(self) -> int:
        return 0


class ResBlock:
    """Residual unit; ``always_proj`` for ``ResBlockProj``. Stride inferred at 1024 px."""

    def __init__(self, layers: list, always_proj: bool) -> None:
        self.layers = layers
        self.in_channels = layers[0].in_channels
        self.out_channels = layers[-1].out_channels
        self.stride = 1024 // self.out_res(1024)
        self.has_proj = always_proj or self.stride > 1 or self.in_channels != self.out_channels

    def out_res(self, r: int) -> int:
        for layer in self.layers:
            r = layer.out_res(r)
        return r

    def flops(self, r: int) -> float:
        total = 0
        for layer in self.layers:
            total += layer.flops(r)
            r = layer.out_res(r)
        if self.has_proj:  # projection counted at (r_out / stride)^2: the reference's bug
            total += (
                self.in_channels * self.out_channels * (r / self.stride) ** 2
                + (r / self.stride) ** 2 * self.out_channels
            )
        return total

    def size(self) -> int:
        total = sum(layer.size() for layer in self.layers)
        if self.has_proj:
            total += self.in_channels * self.out_channels + self.out_channels
        return total


def parse_layers(text: str) -> list:
    layers: list = []
    pos = 0
    while pos < len(text):
        lp = text.index("(", pos)
        name = text[pos:lp]
        rp = _matching_paren(text, lp)
        body = text[lp + 1 : rp]
        if name in ("ResBlock", "ResBlockProj"):
            layers.append(ResBlock(parse_layers(body), always_proj=name == "ResBlockProj"))
        else:
            args = [int(x) for x in body.split(",")]
            layers.append({"ConvKX": ConvKX, "ConvDW": ConvDW, "BN": BN, "RELU": RELU}[name](*args))
        pos = rp + 1
    return layers


# ---------------------------------------------------------------------------------------------
# Super blocks
# ---------------------------------------------------------------------------------------------
_SUPER_RE = re.compile(r"^Super(ConvK(\d)BNRELU|ResK(\d)K(\d)|ResK1K(\d)K1|ResIDWE(\d)K(\d))$")


class SuperBlock:
    def __init__(self, name: str, args: list[int]) -> None:
        m = _SUPER_RE.match(name)
        if m is None:
            raise ValueError(f"unknown super block {name!r}")
        self.name = name
        if m.group(2):
            self.kind, self.kernel = "conv", int(m.group(2))
            self.in_channels, self.out_channels, self.stride, self.sub_layers = args
            self.btn = None
        else:
            (self.in_channels, self.out_channels, self.stride, self.btn, self.sub_layers) = args
            if m.group(3):
                self.kind, self.kernel, self.kernel2 = "kxkx", int(m.group(3)), int(m.group(4))
            elif m.group(5):
                self.kind, self.kernel = "k1kxk1", int(m.group(5))
            else:
                self.kind, self.expansion, self.kernel = "idwe", float(m.group(6)), int(m.group(7))
        self.layers = parse_layers(self.expand())

    def __str__(self) -> str:
        if self.btn is None:
            args = (self.in_channels, self.out_channels, self.stride, self.sub_layers)
        else:
            args = (self.in_channels, self.out_channels, self.stride, self.btn, self.sub_layers)
        return f"{self.name}({','.join(str(a) for a in args)})"

    def expand(self) -> str:
        """The block as a string of basic layers (PlainNet's ``full_str``)."""
        out, btn, k = self.out_channels, self.btn, self.kernel
        text = ""
        c, s = self.in_channels, self.stride
        for i in range(self.sub_layers):
            wrap = "ResBlockProj" if i == 0 else "ResBlock"
            if self.kind == "conv":
                text += f"ConvKX({c},{out},{k},{s})BN({out})RELU({out})"
            elif self.kind == "kxkx":
                body = f"ConvKX({c},{btn},{k},{s})BN({btn})RELU({btn})"
                body += f"ConvKX({btn},{out},{self.kernel2},1)BN({out})"
                text += f"{wrap}({body})RELU({out})"
            elif self.kind == "k1kxk1":
                for cc, ss, w in ((c, s, wrap), (out, 1, "ResBlock")):
                    body = f"ConvKX({cc},{btn},1,1)BN({btn})RELU({btn})"
                    body += f"ConvKX({btn},{btn},{k},{ss})BN({btn})RELU({btn})"
                    body += f"ConvKX({btn},{out},1,1)BN({out})"
                    text += f"{w}({body})RELU({out})"
            else:
                dw1 = smart_round(btn * self.expansion, 8)
                dw2 = smart_round(out * self.expansion, 8)
                body = f"ConvKX({c},{dw1},1,1)BN({dw1})RELU({dw1})ConvDW({dw1},{k},{s})BN({dw1})"
                body += f"RELU({dw1})ConvKX({dw1},{btn},1,1)BN({btn})"
                text += f"{wrap}({body})RELU({out})"
                body = f"ConvKX({btn},{dw2},1,1)BN({dw2})RELU({dw2})ConvDW({dw2},{k},1)BN({dw2})"
                body += f"RELU({dw2})ConvKX({dw2},{out},1,1)BN({out})"
                text += f"ResBlock({body})RELU({out})"
            c, s = out, 1
        return text

    def get_FLOPs(self, r: int) -> float:
        total = 0.0
        for layer in self.layers:
            total += layer.flops(r)
            r = layer.out_res(r)
        return total

    def out_res(self, r: int) -> int:
        for layer in self.layers:
            r = layer.out_res(r)
        return r

    def get_model_size(self) -> int:
        return sum(layer.size() for layer in self.layers)

    def split(self, threshold: int) -> str:
        if self.kind == "conv" or self.sub_layers < threshold:
            return str(self)
        half = threshold // 2
        a = f"{self.name}({self.in_channels},{self.out_channels},{self.stride},{self.btn},{half})"
        b = f"{self.name}({self.out_channels},{self.out_channels},1,{self.btn},"
        return a + b + f"{self.sub_layers - half})"

    def with_in_channels(self, c: int) -> SuperBlock:
        args = [c, self.out_channels, self.stride]
        if self.btn is not None:
            args.append(self.btn)
        args.append(self.sub_layers)
        return SuperBlock(self.name, args)


def parse_structure(text: str) -> list[SuperBlock]:
    blocks = []
    for name, args in re.findall(r"(\w+)\(([^()]*)\)", text):
        if "|" in args:
            args = args.split("|", 1)[1]
        blocks.append(SuperBlock(name, [int(a) for a in args.split(",")]))
    return blocks


class RefMasterNet:
    """The DDSAR MasterNet of the reference, analytic parts only."""

    def __init__(self, text: str, num_classes: int = 1000) -> None:
        self.blocks = parse_structure(text)
        self.num_classes = num_classes

    def get_FLOPs(self, r: int) -> float:
        total = 0
        for b in self.blocks:
            total += b.get_FLOPs(r)
            r = b.out_res(r)
        return total

    def get_model_size(self) -> int:
        total = sum(b.get_model_size() for b in self.blocks)
        return total + self.blocks[-1].out_channels * self.num_classes + 1  # Linear bias = 1

    def get_num_layers(self) -> int:
        return sum(b.sub_layers for b in self.blocks)

    def split(self, threshold: int) -> str:
        return "".join(b.split(threshold) for b in self.blocks)

    def compute_sar_score(self, input_h: int, alpha: float = 0.005) -> list[float]:
        """Per-block SAR computed from the block strings, as the released code does."""
        d0, h, scores = 3, input_h, []
        for block in self.blocks:
            text = str(block)
            args = text[text.index("(") + 1 : -1].split(",")
            kernels = [int(x[1]) for x in re.findall(r"K\d", text)]
            c, out, stride, n = int(args[0]), int(args[1]), int(args[2]), int(args[-1])

            def e(x: float, h_: float) -> float:
                return h_ * h_ * d0 * math.log(x / d0)

            t1, t2, t3 = math.log(h * h * d0), 0.0, 0
            if "IDWE" in text:
                btn = int(args[-2])
                dw = int(text[text.index("IDWE") + 4]) * btn
                for _ in range(n):
                    t2 += e(c, h)
                    t2 += e(dw, h)
                    if stride == 2:
                        h, stride = h / 2, 1
                    t2 += e(dw, h)
                    t2 += e(btn, h)
                    t2 += e(dw, h)
                    t2 += e(dw, h)
                    c = out
                    t3 += kernels[0] * 2
                    t3 += 4
            elif len(kernels) == 3:
                btn = int(args[-2])
                for _ in range(n):
                    t2 += e(c, h)
                    t2 += e(btn, h)
                    if stride == 2:
                        h, stride = h / 2, 1
                    t2 += e(btn, h)
                    t2 += e(out, h)
                    t2 += e(btn, h)
                    t2 += e(btn, h)
                    c = out
                    t3 += kernels[1] * 2
                    t3 += 4
            elif len(kernels) == 2:
                btn = int(args[-2])
                for _ in range(n):
                    t2 += e(c, h)
                    if stride == 2:
                        h, stride = h / 2, 1
                    t2 += e(btn, h)
                    c = out
                    t3 += kernels[0]
                    t3 += kernels[1]
            else:
                for _ in range(n):
                    t2 += e(c, h)
                    c = out
                    if stride == 2:
                        h, stride = h / 2, 1
                    t3 += kernels[0]
            scores.append(math.log(t1 + t2) + alpha * t3)
        return scores

    def forward_ddsar_score(self, r: int, alpha: float = 0.005) -> float:
        sar = self.compute_sar_score(r, alpha)
        total = 0
        for w, s in zip((0.2, 0.27, 0.25, 0.18, 0.1), sar[:5]):
            total += w * s
        return total


# ---------------------------------------------------------------------------------------------
# Search spaces (SearchSpace/search_space_IDW_fixfc.py and search_space_XXBL.py)
# ---------------------------------------------------------------------------------------------
_BTN_MULT = (2.5, 2, 1.5, 1.25, 1, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)
SPACES = {
    "idw": {
        "groups": [[f"SuperResIDWE{e}K{k}" for k in (3, 5, 7) for e in (1, 2, 4, 6)]],
        "out_mult": (2.5, 2, 1.5, 1.25, 1),
        "out_clip": (8, 128),
        "btn_clip": (8, None),
        "fixfc": True,
    },
    "xxbl": {
        "groups": [
            ["SuperResK1K3K1", "SuperResK1K5K1", "SuperResK1K7K1"],
            ["SuperResK3K3", "SuperResK5K5", "SuperResK7K7"],
        ],
        "out_mult": (1.75, 2, 1.5, 1.25, 1, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5),
        "out_clip": (8, 1024),
        "btn_clip": (8, 256),
        "fixfc": False,
    },
}


def _choices(value: int, mult: tuple, clip: tuple) -> list[int]:
    lo, hi = clip
    vals = [max(lo, value * m) for m in mult]
    if hi is not None:
        vals = [min(hi, v) for v in vals]
    return sorted({smart_round(v, 8) for v in vals}, reverse=True)


def gen_search_space(space: dict, blocks: list[SuperBlock], idx: int) -> list[list[str]]:
    b = blocks[idx]
    if b.kind == "conv":
        outs = [b.out_channels] if space["fixfc"] and b.kernel == 1 else None
        if outs is None:
            outs = _choices(b.out_channels, space["out_mult"], space["out_clip"])
        return [list(dict.fromkeys(f"{b.name}({b.in_channels},{o},{b.stride},1)" for o in outs))]
    outs = _choices(b.out_channels, space["out_mult"], space["out_clip"])
    btns = _choices(b.btn, _BTN_MULT, space["btn_clip"])
    layers = sorted({max(0, round(x)) for x in (b.sub_layers + d for d in (0, 1, 2, -1, -2))})
    layers.reverse()
    result = []
    for group in space["groups"]:
        acc: list[str] = []
        for t in group:  # the cumulative list is appended after every type (reference quirk)
            for o, n, bt in itertools.product(outs, layers, btns):
                if n <= 0 or o < 8 or bt < 8:
                    continue
                acc.append(f"{t}({b.in_channels},{o},{b.stride},{bt},{n})")
            acc = list(dict.fromkeys(acc))
            result.append(acc)
    return result


def mutate(text: str, space: dict, rng: random.Random, num_replaces: int) -> str:
    blocks = parse_structure(text)
    chosen: set[int] = set()
    for _ in range(num_replaces):
        idx = rng.randint(1, len(blocks) - 1)
        if idx in chosen:
            continue
        chosen.add(idx)
        flat = [x for lst in gen_search_space(space, blocks, idx) for x in lst]
        new = parse_structure(rng.choice(flat))[0]
        blocks[idx] = new.with_in_channels(blocks[idx - 1].out_channels)
    for i in range(1, len(blocks)):
        blocks[i] = blocks[i].with_in_channels(blocks[i - 1].out_channels)
    net = RefMasterNet("".join(str(b) for b in blocks))
    return net.split(6)


# ---------------------------------------------------------------------------------------------
# The evolutionary loop
# ---------------------------------------------------------------------------------------------
PRESETS = {  # space, budget_flops @224, max_layers, init (DDSAR/scripts/DamoFd_*.sh)
    "damofd-0.5g": (
        "idw",
        65e6,
        14,
        "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(8,32,2,8,1)SuperResIDWE4K3(32,48,2,32,1)"
        "SuperResIDWE1K3(48,96,2,48,1)SuperResIDWE1K3(96,128,2,96,1)",
    ),
    "damofd-2.5g": (
        "xxbl",
        345e6,
        20,
        "SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(32,32,2,32,3)SuperResK3K3(32,48,2,64,2)"
        "SuperResK3K3(48,64,2,128,2)SuperResK3K3(64,128,2,16,3)",
    ),
    "damofd-10g": (
        "xxbl",
        1414e6,
        20,
        "SuperConvK3BNRELU(3,24,2,1)SuperResK3K3(24,48,2,64,5)SuperResK3K3(48,64,2,64,5)"
        "SuperResK3K3(64,96,2,128,3)SuperResK3K3(96,128,2,16,1)",
    ),
    "damofd-34g": (
        "xxbl",
        4375e6,
        20,
        "SuperConvK3BNRELU(3,56,2,2)SuperResK3K3(56,112,2,96,5)SuperResK3K3(112,224,2,96,5)"
        "SuperResK3K3(224,448,2,128,3)SuperResK3K3(448,1024,2,16,1)",
    ),
}


def evolution_search(
    init: str,
    space_name: str,
    *,
    budget_flops: float | None,
    max_layers: int | None,
    budget_model_size: float | None = None,
    resolution: int = 224,
    population_size: int = 512,
    iterations: int = 96_000,
    seed: int = 0,
    alpha: float = 0.005,
) -> tuple[list[str], list[float]]:
    """The reference main loop; returns the final population (structures, scores)."""
    rng = random.Random(seed)
    space = SPACES[space_name]
    structures: list[str] = []
    scores: list[float] = []
    for _ in range(iterations):
        while len(structures) > population_size:
            i = scores.index(min(scores))
            scores.pop(i)
            structures.pop(i)
        if len(structures) <= 10:
            cand = mutate(init, space, rng, 1)
        else:
            cand = mutate(structures[rng.randint(0, len(structures) - 1)], space, rng, 2)
        cand = RefMasterNet(cand).split(6)
        if max_layers is not None and max_layers < RefMasterNet(cand).get_num_layers():
            continue
        if (
            budget_model_size is not None
            and budget_model_size < RefMasterNet(cand).get_model_size()
        ):
            continue
        if budget_flops is not None and budget_flops < RefMasterNet(cand).get_FLOPs(resolution):
            continue
        net = RefMasterNet(cand)
        if len(net.blocks) != 5:
            continue
        structures.append(cand)
        scores.append(net.forward_ddsar_score(resolution, alpha))
    return structures, scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="damofd-0.5g", choices=sorted(PRESETS))
    ap.add_argument("--iterations", type=int, default=96_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    space, flops, layers, init = PRESETS[args.preset]
    t = time.perf_counter()
    structures, scores = evolution_search(
        init,
        space,
        budget_flops=flops,
        max_layers=layers,
        iterations=args.iterations,
        seed=args.seed,
    )
    wall = time.perf_counter() - t
    best = max(scores)
    out = {
        "preset": args.preset,
        "seed": args.seed,
        "iterations": args.iterations,
        "wall_time_s": round(wall, 2),
        "iterations_per_s": round(args.iterations / wall, 1),
        "best_score": best,
        "best_structure": structures[scores.index(best)],
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
