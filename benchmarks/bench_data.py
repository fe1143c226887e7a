"""Training-data throughput on the real WIDER FACE train subset, plus the loss on CPU.

    python benchmarks/bench_data.py                      # single process, 200 samples
    python benchmarks/bench_data.py -n 400 --workers 2   # also a DataLoader with 2 workers
    python benchmarks/bench_data.py --criterion          # also ATSS + losses per batch of 8
    python benchmarks/bench_data.py --data runs/gpu_data --models damofd-0.5g -n 1200 \
        --workers 14 --batch 64 --pin-memory               # a GPU machine's loader, no assets

Measures, for each augmentation recipe (``--models``), the samples/s of
``WiderFaceDataset.__getitem__`` (JPEG decode, RandomSquareCrop, resize to 640, flip,
PhotoMetricDistortion, normalise, tensors) in one process, and the share of that time spent
decoding. ``--criterion`` times ``SCRFDCriterion`` (ATSS assignment + QFL/DIoU/kps losses,
forward + backward) on random head outputs and real augmented targets. ``--data`` reads another
dataset (a folder with ``labelv2.txt`` + ``images/``, e.g. the ``damofd data shrink`` copy that
travels to a GPU machine). The DataLoader figure leaves out the workers' start-up (its first
batch) and prints the bytes per batch that cross from the workers. The machine is shared:
re-run when figures look off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import torch

from damofd.data.dataset import WiderFaceDataset, collate_batch, load_image_bgr
from damofd.data.transforms import AugmentConfig
from damofd.testing import assets_dir


def _dataset(model: str, seed: int, data: str | None = None) -> WiderFaceDataset:
    cfg = AugmentConfig.for_model(model)
    if data is not None:
        return WiderFaceDataset(data, config=cfg, seed=seed)
    root = assets_dir()
    if root is None:
        sys.exit("shared assets not found (../shared/assets or $DAMOFD_ASSETS); or pass --data")
    return WiderFaceDataset(
        root / "widerface/labelv2/train/labelv2.txt",
        root / "widerface/WIDER_train/images",
        config=cfg,
        seed=seed,
    )


def bench_pipeline(ds: WiderFaceDataset, n: int) -> tuple[float, float]:
    """(samples/s of __getitem__, samples/s of decoding alone) over the first n indices."""
    idx = [i % len(ds) for i in range(n)]
    ds[0]  # warm-up
    t = time.perf_counter()
    for i in idx:
        ds[i]
    full = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in idx:
        load_image_bgr(ds.image_path(i))
    decode = n / (time.perf_counter() - t)
    return full, decode


def bench_loader(
    ds: WiderFaceDataset, n: int, workers: int, batch: int = 8, pin_memory: bool = False
) -> tuple[float, int]:
    """(samples/s after the first batch, bytes of one batch's images) of a DataLoader over the
    first ``n`` samples (cycling through the set when ``n`` exceeds it)."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, [i % len(ds) for i in range(n)]),
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    it = iter(loader)
    first = next(it)["img"]
    t = time.perf_counter()
    count = sum(b["img"].shape[0] for b in it)
    return count / (time.perf_counter() - t), first.numel() * first.element_size()


def bench_criterion(ds: WiderFaceDataset, repeat: int) -> list[float]:
    from damofd.training.criterion import SCRFDCriterion

    batch = collate_batch([ds[i] for i in range(8)])
    g = torch.Generator().manual_seed(0)
    outs = []
    for s in (8, 16, 32):
        n = 640 // s
        outs.append(
            (
                torch.randn(8, 2, n, n, generator=g) - 3,
                torch.rand(8, 8, n, n, generator=g) * 3,
                torch.randn(8, 20, n, n, generator=g),
            )
        )
    crit = SCRFDCriterion(use_kps=True)
    times = []
    for _ in range(repeat + 1):
        cls = [o[0].clone().requires_grad_() for o in outs]
        box = [o[1].clone().requires_grad_() for o in outs]
        kps = [o[2].clone().requires_grad_() for o in outs]
        t = time.perf_counter()
        losses = crit(cls, box, kps, batch["gt_bboxes"], batch["gt_keypoints"])
        sum(losses.values()).backward()
        times.append(time.perf_counter() - t)
    n_gt = sum(len(b) for b in batch["gt_bboxes"])
    print(f"criterion: batch 8 at 640x640, {n_gt} GT boxes, forward+backward")
    return times[1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="samples per measurement")
    ap.add_argument("--models", nargs="+", default=["damofd-0.5g", "damofd-10g"])
    ap.add_argument("--workers", type=int, default=0, help="also time a DataLoader")
    ap.add_argument("--batch", type=int, default=8, help="DataLoader batch size (8)")
    ap.add_argument("--pin-memory", action="store_true", help="DataLoader pin_memory (as on CUDA)")
    ap.add_argument("--data", help="dataset folder or labelv2 file (default: the shared subset)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads")
    ap.add_argument("--criterion", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"{'recipe':<14} {'samples/s':>10} {'decode/s':>10} {'decode share':>13}")
    for model in args.models:
        ds = _dataset(model, args.seed, args.data)
        full, decode = bench_pipeline(ds, args.n)
        print(f"{model:<14} {full:10.1f} {decode:10.1f} {full / decode:12.0%}")
        if args.workers:
            rate, nbytes = bench_loader(ds, args.n, args.workers, args.batch, args.pin_memory)
            print(
                f"{'':<14} DataLoader, {args.workers} workers, batch {args.batch}: {rate:.1f} "
                f"samples/s ({nbytes / 2**20:.0f} MiB of images per batch)"
            )
    if args.criterion:
        times = bench_criterion(_dataset(args.models[-1], args.seed, args.data), 5)
        print(
            f"criterion: median {statistics.median(times) * 1e3:.1f} ms, "
            f"best {min(times) * 1e3:.1f} ms (threads={args.threads})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
