"""Training throughput: data pipeline alone, train step alone, and both (the real Trainer).

    python benchmarks/bench_train.py --model damofd-0.5g --img-size 640 --batch-size 8 \\
        --threads 2 --workers 0,1,2 --iters 10 [--memory-format contiguous]

* ``data``: ``WiderFaceDataset`` with the model's augmentation recipe (decode, RandomSquareCrop,
  resize, flip, PhotoMetricDistortion, normalise), through a ``DataLoader`` with each worker
  count in ``--workers`` — images/s.
* ``step``: forward + ``SCRFDCriterion`` + backward + SGD step on pre-loaded batches (real
  augmented samples held in memory, so no data cost) — images/s.
* ``end-to-end``: the real :class:`~damofd.training.trainer.Trainer` for ``--iters`` iterations
  (``max_iters``) in a temporary work dir — images/s from its log (first iteration excluded).

Prints one JSON object per measurement and a summary table. Timings on a shared machine are
noisy: re-run when figures look off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from damofd.testing import assets_dir


def _default_data() -> tuple[str | None, str | None]:
    root = assets_dir()
    if root is None:
        return None, None
    return (
        str(root / "widerface/labelv2/train/labelv2.txt"),
        str(root / "widerface/WIDER_train/images"),
    )


def bench_data(args, cfg, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from damofd.data.dataset import WiderFaceDataset, collate_batch

    ds = WiderFaceDataset(args.labels, args.images, config=cfg.data.augment_config(), seed=0)
    n = min(args.data_samples, len(ds))
    import cv2

    if workers:
        cv2.setNumThreads(1)  # as the Trainer: a fork during OpenCV's pool use can deadlock
    loader = DataLoader(
        torch.utils.data.Subset(ds, list(range(n))),
        batch_size=args.batch_size,
        num_workers=workers,
        collate_fn=collate_batch,
    )
    it = iter(loader)
    first = next(it)  # worker start-up and the first batch are not timed
    count = int(first["img"].shape[0])
    t0 = time.perf_counter()
    timed = 0
    for batch in it:
        timed += int(batch["img"].shape[0])
    dt = time.perf_counter() - t0
    return {
        "what": "data",
        "workers": workers,
        "images": timed,
        "seconds": dt,
        "images_per_s": timed / dt if dt > 0 else None,
        "first_batch_images": count,
    }


def bench_step(args, cfg) -> dict:
    from damofd.data.dataset import WiderFaceDataset, collate_batch
    from damofd.data.transforms import AugmentConfig
    from damofd.training.criterion import SCRFDCriterion
    from damofd.training.trainer import build_model

    d = cfg.data
    aug = AugmentConfig(size=d.img_size, crop_choice=tuple(d.crop_choice))
    ds = WiderFaceDataset(args.labels, args.images, config=aug, seed=0)
    batches = [
        collate_batch([ds[(b * args.batch_size + i) % len(ds)] for i in range(args.batch_size)])
        for b in range(2)
    ]
    dev = torch.device(args.device)
    model = build_model(cfg).to(dev).train()
    crit = SCRFDCriterion(use_kps=model.use_kps)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    channels_last = _channels_last(args)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    times = []
    for i in range(args.iters + 1):
        batch = batches[i % 2]
        x = batch["img"].to(dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        cls, bbox, kps = model(x)
        losses = crit(cls, bbox, kps, [g.to(dev) for g in batch["gt_bboxes"]])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step (allocations, kernel selection) is not timed
            times.append(time.perf_counter() - t0)
    per = sum(times) / len(times)
    return {
        "what": "step",
        "iters": len(times),
        "seconds_per_iter": per,
        "images_per_s": args.batch_size / per,
        "channels_last": channels_last,
    }


def _channels_last(args) -> bool:
    """The Trainer's default (NHWC on CPU) unless ``--memory-format`` says otherwise."""
    if args.memory_format == "auto":
        return torch.device(args.device).type == "cpu"
    return args.memory_format == "channels_last"


def bench_end_to_end(args, cfg, workers: int) -> dict:
    from damofd.training.trainer import Trainer

    cfg.data.workers_per_gpu = workers
    cfg.channels_last = _channels_last(args)
    cfg.max_iters = args.iters + 1
    cfg.log_config.interval = 1
    cfg.log_config.progress = False
    cfg.evaluation.interval = 0
    cfg.checkpoint_config.interval = 0
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, tmp, log=lambda m: None).train()
        recs = [json.loads(x) for x in Path(tmp, "log.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["mode"] == "train"][1:]
    t = sum(r["time"] for r in train)
    dt = sum(r["data_time"] for r in train)
    images = args.batch_size * len(train)
    return {
        "what": "end-to-end",
        "workers": workers,
        "iters": len(train),
        "seconds_per_iter": t / len(train),
        "data_seconds_per_iter": dt / len(train),
        "images_per_s": images / t,
        "channels_last": cfg.channels_last,
    }


def main(argv: list[str] | None = None) -> int:
    labels, images = _default_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="damofd-0.5g")
    p.add_argument("--labels", default=labels, help="labelv2 file (default: shared assets)")
    p.add_argument("--images", default=images, help="image folder")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (main process)")
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    p.add_argument("--iters", type=int, default=5, help="timed iterations (step, end-to-end)")
    p.add_argument("--data-samples", type=int, default=48, help="samples for the data bench")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--memory-format",
        choices=("auto", "channels_last", "contiguous"),
        default="auto",
        help="network memory format (auto = the Trainer's default: channels_last on CPU)",
    )
    p.add_argument("--only", choices=("data", "step", "end-to-end"), action="append")
    args = p.parse_args(argv)
    if args.labels is None or not Path(args.labels).is_file():
        p.error("no labelv2 file: pass --labels and --images (or provide the shared assets)")
    torch.set_num_threads(args.threads)
    from damofd.training.config import recipe

    def cfg():
        c = recipe(args.model)
        c.data.train, c.data.train_images = args.labels, args.images
        c.data.img_size = args.img_size
        c.data.samples_per_gpu = args.batch_size
        c.cpu_threads = args.threads
        c.device = args.device
        return c

    workers = [int(w) for w in args.workers.split(",") if w != ""]
    only = set(args.only or ("data", "step", "end-to-end"))
    results = []
    header = {
        "model": args.model,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    print(json.dumps({"what": "setup", **header}), flush=True)
    if "data" in only:
        for w in workers:
            results.append(bench_data(args, cfg(), w))
            print(json.dumps(results[-1]), flush=True)
    if "step" in only:
        results.append(bench_step(args, cfg()))
        print(json.dumps(results[-1]), flush=True)
    if "end-to-end" in only:
        for w in workers:
            results.append(bench_end_to_end(args, cfg(), w))
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'measurement':<24}{'images/s':>10}", file=sys.stderr)
    for r in results:
        label = r["what"] + (f" (workers {r['workers']})" if "workers" in r else "")
        ips = r["images_per_s"]
        print(f"{label:<24}{ips:>10.2f}" if ips else f"{label:<24}{'-':>10}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
