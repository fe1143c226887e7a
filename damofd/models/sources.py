"""One answer to "what does this model spec mean": the weights resolver.

Every entry point that takes a model — :meth:`damofd.inference.FaceDetector.from_pretrained`
(and its ``from_zoo``), ``damofd detect``, ``damofd eval`` (:mod:`damofd.engine.wider_eval`),
``damofd export`` (:func:`damofd.export.onnx.resolve_model`) and fine-tuning's ``load_from``
(:func:`damofd.training.builders.load_pretrained`) — turns its ``(model, weights)`` pair into a
:class:`ModelSource` with :func:`resolve_source`, and a PyTorch module with :func:`load_source`.
The rules, in order:

========================================  ==========================================
spec                                      source
========================================  ==========================================
``None``                                  the bundled default (:data:`DEFAULT_MODEL`)
an existing ``.onnx`` file                ``onnx`` (architecture detected from the graph)
another existing file                     ``checkpoint`` (``.pth``/``.pt``: recorded arch)
``pytorch_model.pt`` etc. of a ModelScope  ``modelscope`` (its folder)
folder, or the folder itself
``modelscope:owner/name`` or a known id   ``modelscope`` (hub id; downloaded when allowed)
a missing path with a weights suffix      :class:`~damofd.errors.InputError` "no such file"
a zoo name (aliases allowed) + weights    ``onnx``/``checkpoint`` of that architecture
a zoo name with bundled weights           ``bundled`` (package data, sha256-checked)
another DamoFD zoo name                   ``zoo`` with its ModelScope id (download)
any other zoo name                        ``zoo`` without weights
========================================  ==========================================

Anything else is an :class:`UnknownModelError`. Only the explicit ``modelscope:`` prefix (as
timm's ``hf-hub:``) makes an unknown ``owner/name`` a hub id; a bare one is most often a
mistyped path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from damofd.errors import ConfigError, InputError

if TYPE_CHECKING:
    from damofd.models.detector import SCRFD

__all__ = [
    "MODELSCOPE_PREFIX",
    "WEIGHT_SUFFIXES",
    "ModelSource",
    "SourceKind",
    "UnknownModelError",
    "load_source",
    "missing_weights_message",
    "resolve_modelscope_id",
    "resolve_source",
]

SourceKind = Literal["bundled", "onnx", "checkpoint", "modelscope", "zoo"]
#: Suffixes that make a spec a file name (a missing one is "no such file", not a model name).
WEIGHT_SUFFIXES = (".onnx", ".pth", ".pt", ".ckpt", ".bin")
#: Prefix that makes a string a ModelScope hub id (``modelscope:owner/name``).
MODELSCOPE_PREFIX = "modelscope:"


class UnknownModelError(ConfigError, InputError):
    """A spec that is neither a file, a folder, a ModelScope id nor a zoo name."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's architecture and weights come from (see the module docstring).

    Attributes:
        spec: what the caller passed (for messages).
        kind: ``bundled``, ``onnx``, ``checkpoint``, ``modelscope`` or ``zoo`` (no weights file).
        name: canonical zoo architecture when the spec names one (``None`` for a bare file,
            whose architecture is recorded inside it).
        path: the weights file (``onnx``/``checkpoint``) or ModelScope folder.
        model_id: the ModelScope hub id (``modelscope`` without a folder, or a DamoFD ``zoo``
            name that has one).
    """

    spec: str
    kind: SourceKind
    name: str | None = None
    path: Path | None = None
    model_id: str | None = None

    @property
    def has_onnx(self) -> bool:
        """Whether an ONNX file exists for it (onnxruntime can run it without an export)."""
        return self.kind in ("onnx", "bundled")

    def file(self, fmt: Literal["onnx", "pth"]) -> Path:
        """The ``fmt`` weights file: the bundled one (sha256-checked) or ``path``."""
        if self.kind == "bundled":
            from damofd.models.bundled import bundled_file

            assert self.name is not None
            return bundled_file(self.name, fmt)
        want = "onnx" if fmt == "onnx" else "checkpoint"
        if self.kind != want or self.path is None:
            raise ConfigError(f"{self.describe()} has no {fmt} file")
        return self.path

    def describe(self) -> str:
        """Short words for messages and reports: ``damofd-0.5g-bnkps (bundled weights)``."""
        if self.kind == "bundled":
            return f"{self.name} (bundled weights)"
        if self.kind == "zoo":
            return f"{self.name} (no weights)"
        if self.kind == "modelscope":
            return f"ModelScope model {self.path or self.model_id}"
        where = f"{self.name} from " if self.name else ""
        return f"{where}{'ONNX file' if self.kind == 'onnx' else 'checkpoint'} {self.path}"


def resolve_source(
    spec: str | os.PathLike[str] | ModelSource | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    model_opt: str = "model",
    weights_opt: str = "weights",
) -> ModelSource:
    """The :class:`ModelSource` of ``spec`` (and ``weights``, a file for a zoo name).

    ``model_opt`` / ``weights_opt`` name the two arguments in error messages (``--model`` and
    ``--weights`` on the command line, ``--load-from`` for fine-tuning). Raises
    :class:`~damofd.errors.InputError` for a missing file, :class:`~damofd.errors.ConfigError`
    for a bad combination and :class:`UnknownModelError` for a spec that means nothing.
    """
    if isinstance(spec, ModelSource):
        if weights is not None:
            raise ConfigError(f"{weights_opt} cannot be combined with a resolved model source")
        return spec
    if spec is None:
        if weights is not None:
            return _weights_file(os.fspath(weights), None, weights_opt)
        from damofd.models.bundled import DEFAULT_MODEL

        spec = DEFAULT_MODEL
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"{model_opt} must be a zoo name or a path, got {spec!r}")
    s = os.fspath(spec)
    p = Path(s)
    if p.exists():
        return _existing_path(s, p, weights, weights_opt)
    prefixed = s.lower().startswith(MODELSCOPE_PREFIX)
    model_id = s[len(MODELSCOPE_PREFIX) :] if prefixed else s
    known = resolve_modelscope_id(model_id)
    if prefixed or known is not None:
        if weights is not None and known is not None:
            # an official id with explicit weights: that id's zoo architecture
            return _weights_file(os.fspath(weights), known, weights_opt, model_opt=model_opt)
        _no_weights(s, weights, weights_opt, "a ModelScope id")
        return ModelSource(s, "modelscope", known, model_id=model_id)
    if p.suffix.lower() in WEIGHT_SUFFIXES:
        raise InputError(f"{_opt(model_opt)}{s}: no such file")
    name = _zoo_name(s, model_opt)
    if weights is not None:
        return _weights_file(os.fspath(weights), name, weights_opt, model_opt=model_opt)
    from damofd.models.bundled import get_bundled

    if get_bundled(name) is not None:
        return ModelSource(s, "bundled", name)
    return ModelSource(s, "zoo", name, model_id=_modelscope_id_of(name))


def load_source(
    source: ModelSource,
    *,
    form: Literal["canonical", "fused"] = "canonical",
    download: bool = True,
    hint: str = "",
) -> SCRFD:
    """Build the :class:`~damofd.models.SCRFD` of ``source`` with its weights (eval mode).

    ``form="fused"`` folds BatchNorm into the convs. A ``zoo`` source with a ModelScope id is
    fetched from the hub when ``download``; one without weights raises
    :class:`~damofd.errors.ConfigError` (:func:`missing_weights_message`, then ``hint``).
    """
    if source.kind == "zoo" and (source.model_id is None or not download):
        assert source.name is not None
        raise ConfigError(missing_weights_message(source.name, hub=source.model_id) + hint)
    if source.kind == "onnx":
        from damofd.models.onnx_import import import_scrfd_onnx

        assert source.path is not None
        return import_scrfd_onnx(source.path, config=source.name, form=form).eval()
    if source.kind in ("modelscope", "zoo"):
        from damofd.models.modelscope import load_modelscope

        model = load_modelscope(os.fspath(source.path or source.model_id or ""))
    else:
        from damofd.models.factory import load_model

        model = load_model(source.file("pth"), name=source.name)
    if form == "fused":
        model.fuse()
    return model.eval()


def missing_weights_message(name: str, *, hub: str | None = None) -> str:
    """Why zoo model ``name`` has no weights here, and what to pass instead."""
    from damofd.models.zoo import get_model_info

    info = get_model_info(name)
    where = "; ".join(f"{w.kind}: {w.location}" for w in info.weights)
    if hub is not None:
        why = f"no weights given (ModelScope download of {hub} not attempted here)"
    elif where:
        why = f"no weights given; its released weights cannot be fetched automatically ({where})"
        why += "; download them"
    else:
        why = "no weights given; no weights were released for it; train your own"
    return (
        f"model {name!r}: {why} and pass weights= (CLI: --weights FILE), a .pth checkpoint or an "
        "ONNX file of this architecture"
    )


def resolve_modelscope_id(s: str) -> str | None:
    """Zoo name of an official ModelScope id (case-insensitive), else ``None``."""
    from damofd.models.zoo import MODELSCOPE_MODELS

    key = s.strip().rstrip("/").lower()
    return next((v for k, v in MODELSCOPE_MODELS.items() if k.lower() == key), None)


# ----------------------------------------------------------------------------------------------
def _opt(option: str) -> str:
    """``"--load-from "`` for an option name in a message; nothing for a Python argument."""
    return f"{option} " if option.startswith("-") else ""


def _existing_path(
    s: str, p: Path, weights: str | os.PathLike[str] | None, weights_opt: str
) -> ModelSource:
    from damofd.models.modelscope import MODELSCOPE_FILES, is_modelscope_dir

    if p.is_dir():
        _no_weights(s, weights, weights_opt, "a ModelScope folder")
        return ModelSource(s, "modelscope", path=p)
    if p.name in MODELSCOPE_FILES and is_modelscope_dir(p.parent):
        _no_weights(s, weights, weights_opt, "a file of a ModelScope folder")
        return ModelSource(s, "modelscope", path=p.parent)
    onnx = p.suffix.lower() == ".onnx"
    if weights is not None:
        kind = "an ONNX file" if onnx else "a weights file"
        raise ConfigError(
            f"{s} is {kind}; {weights_opt} is for a zoo name (e.g. damofd-0.5g-kps "
            f"{weights_opt} {Path(os.fspath(weights)).name}), drop one"
        )
    return ModelSource(s, "onnx" if onnx else "checkpoint", path=p)


def _weights_file(
    w: str, name: str | None, weights_opt: str, *, model_opt: str = "model"
) -> ModelSource:
    p = Path(w)
    if p.is_dir():
        raise InputError(f"{_opt(weights_opt)}{w}: is a directory, not a weights file")
    if not p.is_file():
        raise InputError(f"{_opt(weights_opt)}{w}: weights file not found")
    onnx = p.suffix.lower() == ".onnx"
    if onnx and name is not None:
        from damofd.models.onnx_import import detect_onnx_config
        from damofd.models.zoo import resolve_name

        found = detect_onnx_config(p)
        if resolve_name(found) != name:
            raise ConfigError(
                f"{weights_opt} {w} holds a {found} model, not {model_opt} {name}; pass "
                f"{model_opt} {found} (or the ONNX file alone)"
            )
    return ModelSource(w, "onnx" if onnx else "checkpoint", name, path=p)


def _no_weights(
    s: str, weights: str | os.PathLike[str] | None, weights_opt: str, what: str
) -> None:
    if weights is not None:
        raise ConfigError(f"{s} is {what}; it holds its own weights (drop {weights_opt})")


def _zoo_name(s: str, model_opt: str) -> str:
    from damofd.models.zoo import resolve_name

    try:
        return resolve_name(s)
    except ConfigError as e:
        raise UnknownModelError(
            f"{_opt(model_opt)}{s}: not a file, a ModelScope folder or a ModelScope id "
            f"({MODELSCOPE_PREFIX}owner/name), nor a zoo model: {e}"
        ) from None


def _modelscope_id_of(name: str) -> str | None:
    from damofd.models.zoo import MODELSCOPE_MODELS

    return next((k for k, v in MODELSCOPE_MODELS.items() if v == name), None)
