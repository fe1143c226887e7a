"""Build the detector that a set of detection options describes (``damofd detect``, ``damofd
serve``-style tools and the Ray engine's actors share it).

The options are those of ``damofd detect`` (an ``argparse.Namespace`` or any object with the same
attributes): ``onnx``, ``model``, ``weights``, ``backend``, ``device``, ``fp16``, ``threads``,
``workers``, ``protocol``, ``score_thr``, ``nms_thr``, ``max_faces``, ``batch_size``,
``url_timeout``, ``max_pixels``. The model spec is resolved by
:func:`damofd.models.sources.resolve_source`; a PyTorch-only model asked to run on onnxruntime
is exported with :func:`damofd.export.export_detector`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from damofd.device import onnx_has_cuda
from damofd.errors import ConfigError, InputError

__all__ = ["build_detector", "refuse_torch_flags"]


def refuse_torch_flags(args: Any) -> None:
    """:class:`ConfigError` when ``--fp16``, or a CUDA ``--device`` that this onnxruntime cannot
    serve (no CUDA provider), is given for a model that runs on onnxruntime."""
    flags = []
    if args.device not in ("cpu", "auto") and not (
        str(args.device).startswith("cuda") and onnx_has_cuda()
    ):
        flags.append(f"--device {args.device}")
    if args.fp16:
        flags.append("--fp16")
    if flags:
        verb, pronoun = ("applies", "it") if len(flags) == 1 else ("apply", "them")
        raise ConfigError(
            f"{' and '.join(flags)} {verb} to the torch backend, but this model runs on "
            f"onnxruntime (CPU); add --backend torch or drop {pronoun}"
        )


def build_detector(args: Any) -> Any:
    """The :class:`FaceDetector` described by the CLI options.

    ``--onnx FILE`` excludes ``--model``/``--weights``; ``--device`` (other than cpu) and
    ``--fp16`` are refused on the onnx backend. ``--backend onnx`` with a PyTorch model exports
    it to a temporary ONNX file first (:func:`damofd.export.export_detector`, as ``damofd eval``
    does).
    """
    from damofd.inference import FaceDetector
    from damofd.inference.detector import choose_backend
    from damofd.models.sources import resolve_source

    if args.onnx is not None and (args.model is not None or args.weights is not None):
        given = " and ".join(
            f for f, v in (("--model", args.model), ("--weights", args.weights)) if v
        )
        raise ConfigError(
            f"--onnx cannot be combined with {given}: pass --onnx FILE alone, or --model NAME "
            f"--weights FILE (.pth or .onnx)"
        )
    common: dict[str, Any] = {
        "protocol": args.protocol,
        "score_thr": args.score_thr,
        "nms_thr": args.nms_thr,
        "max_faces": args.max_faces,
        "batch_size": args.batch_size,
        "url_timeout": args.url_timeout,
    }
    if args.max_pixels is not None:
        common["max_pixels"] = args.max_pixels
    torch_kw = {"device": args.device, "fp16": args.fp16}
    onnx_kw: dict[str, Any] = {"threads": args.threads, "workers": args.workers}
    if args.device in ("cpu", "auto") or str(args.device).startswith("cuda"):
        from damofd.device import onnx_providers

        # a CUDA device this onnxruntime cannot serve is refused below with the torch wording
        with contextlib.suppress(ConfigError):
            onnx_kw["providers"] = onnx_providers(args.device)
    if args.onnx is not None:
        p = Path(args.onnx)
        if p.is_dir():
            raise InputError(f"{p}: is a directory, not an ONNX file")
        if not p.is_file():
            raise InputError(f"{p}: ONNX file not found")
    src = resolve_source(
        args.onnx or args.model, args.weights, model_opt="--model", weights_opt="--weights"
    )
    backend = choose_backend(
        src, args.backend, device=args.device, fp16=args.fp16, providers=onnx_kw.get("providers")
    )
    if backend == "onnx":
        refuse_torch_flags(args)
    if backend == "onnx" and not src.has_onnx:
        sys.stderr.write("damofd detect: exporting the model to ONNX for --backend onnx\n")
        from damofd.export import export_detector

        det = FaceDetector.from_pretrained(src, backend="torch", **torch_kw, **common)
        return export_detector(det, **onnx_kw)
    kw = onnx_kw if backend == "onnx" else torch_kw
    return FaceDetector.from_pretrained(src, backend=backend, **kw, **common)
