"""Inputs and records of the batch verbs.

* :func:`collect_files` (``align``, ``anonymize``): files as given, folders searched.
* :func:`expand_inputs` (``detect``, both engines): image/video files, folders (recursive), glob
  patterns, http(s) URLs, camera indices, text files listing paths or URIs (``.txt``, ``.lst``)
  and Parquet/CSV tables with a path column.
* :func:`detection_record` / :func:`recorded_paths`: the JSON record of one image as ``damofd
  detect`` writes it, and the images an existing record file holds without an error (resuming).
* :class:`OutputNamer`: collision-free output names for drawings.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from damofd.errors import ConfigError, InputError

#: Output folder of ``damofd detect`` (both engines) when drawings are asked for without --out.
DEFAULT_OUT = "damofd_detect_out"

__all__ = [
    "LIST_EXTENSIONS",
    "TABLE_EXTENSIONS",
    "InputItem",
    "OutputNamer",
    "collect_files",
    "detection_record",
    "expand_inputs",
    "read_path_list",
    "read_path_table",
    "recorded_paths",
]

#: Text files listing one path or URI per line (``#`` comments and blank lines skipped).
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
#: Tables whose path column lists the inputs.
TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".parquet", ".pq"})
_GLOB_MAGIC = frozenset("*?[")


def collect_files(
    inputs: Iterable[str], extensions: Iterable[str]
) -> list[tuple[Path, Path, Path | None]]:
    """``(path, relative output path, folder)`` per input: a file is taken as given (a missing
    or unreadable one is reported by its loader), a folder is searched recursively for files with
    one of ``extensions``; the relative path keeps the folder structure under the folder."""
    exts = frozenset(e.lower() for e in extensions)
    out: list[tuple[Path, Path, Path | None]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += [
                (f, f.relative_to(p), p) for f in sorted(p.rglob("*")) if f.suffix.lower() in exts
            ]
        else:
            out.append((p, Path(p.name), None))
    return out


class InputItem(NamedTuple):
    """One input of ``damofd detect``.

    ``kind`` is ``image``, ``video``, ``camera`` or ``empty`` (a folder, pattern or list that
    names nothing to process; ``note`` says which); ``base`` is the folder that drawings keep the
    structure under (``None``: the file name alone)."""

    kind: str
    source: str
    base: Path | None = None
    note: str | None = None


def _is_camera(s: str) -> bool:
    return s.isdigit() and not Path(s).exists()


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _has_scheme(s: str) -> bool:
    """``s3://...``, ``gs://...``, ``http://...``: a URI rather than a local path."""
    head, sep, _ = s.partition("://")
    return bool(sep) and head.isalnum() and len(head) > 1


def _classify(s: str, base: Path | None = None) -> InputItem:
    from damofd.inference.video import VIDEO_EXTENSIONS

    if not _is_url(s) and Path(s).suffix.lower() in VIDEO_EXTENSIONS:
        return InputItem("video", s, base)
    # missing or unreadable files are reported by the loader
    return InputItem("image", s, base)


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    keep = []
    for part in parts[:-1]:
        if _GLOB_MAGIC & set(part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def read_path_list(path: str | Path) -> list[str]:
    """Paths or URIs listed in a text file, one per line, as written (relative paths are taken
    from the current folder); blank lines and lines starting with ``#`` are skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file of paths (not UTF-8)") from None
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


def read_path_table(path: str | Path, column: str = "path") -> list[str]:
    """The non-empty values of ``column`` in a CSV/TSV file (header row) or a Parquet file.

    Raises:
        ConfigError: the table has no such column (the message names the file and its columns),
            or pyarrow is missing for a Parquet file.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                f"{p}: reading a Parquet table needs pyarrow (pip install 'damofd[ray]')"
            ) from None
        try:
            names = pq.read_schema(p).names
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise InputError(f"{p}: not a readable Parquet file ({e})") from None
        if column not in names:
            raise ConfigError(
                f"{p}: no {column!r} column (columns: {', '.join(names) or 'none'}); name the "
                f"column of paths with --path-column NAME"
            )
        values = pq.read_table(p, columns=[column]).column(column).to_pylist()
    else:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            names = list(reader.fieldnames or [])
            if column not in names:
                raise ConfigError(
                    f"{p}: no {column!r} column (columns: {', '.join(names) or 'none'}); name "
                    f"the column of paths with --path-column NAME"
                )
            values = [row.get(column) for row in reader]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def expand_inputs(inputs: Iterable[str], *, path_column: str = "path") -> Iterator[InputItem]:
    """The inputs of ``damofd detect``, expanded in order.

    * http(s) URLs and other URIs (``s3://...``): an image (``damofd detect --engine ray`` reads
      non-http URIs through pyarrow's file systems);
    * a bare integer that is not a file: a camera;
    * a folder: its images and videos, searched recursively (``empty`` when it holds none);
    * a pattern with ``*``, ``?`` or ``[`` that is not an existing file (``**`` matches any
      depth): the images and videos it matches (``empty`` when none);
    * a ``.txt``/``.lst`` file: the paths or URIs it lists, one per line;
    * a ``.csv``/``.tsv``/``.parquet`` file: the values of its ``path_column``;
    * anything else: an image or video file by its extension.
    """
    from damofd.inference.image_io import IMAGE_EXTENSIONS
    from damofd.inference.video import VIDEO_EXTENSIONS

    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    for s in inputs:
        p = Path(s)
        if _is_url(s) or _has_scheme(s):
            yield InputItem("image", s)
        elif _is_camera(s):
            yield InputItem("camera", s)
        elif p.is_dir():
            found = False
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                if f.suffix.lower() in media:
                    found = True
                    yield _classify(str(f), p)
            if not found:
                yield InputItem("empty", s, p, "no images or videos in this folder")
        elif not p.exists() and _GLOB_MAGIC & set(s):
            base = _glob_base(s)
            matches = sorted(
                m
                for m in glob.glob(s, recursive=True)
                if Path(m).is_file() and Path(m).suffix.lower() in media
            )
            for m in matches:
                yield _classify(m, base)
            if not matches:
                yield InputItem("empty", s, None, "no image or video matches this pattern")
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS | TABLE_EXTENSIONS:
            listed = (
                read_path_list(p)
                if p.suffix.lower() in LIST_EXTENSIONS
                else read_path_table(p, path_column)
            )
            for entry in listed:
                yield _classify(entry)
            if not listed:
                yield InputItem("empty", s, None, "lists no paths")
        else:
            yield _classify(s)


def detection_record(result: Any, path: str, vis: str | None = None) -> dict[str, Any]:
    """The JSON record of one image in ``detections.jsonl``: ``path``, ``image_size`` [h, w],
    ``error`` (failures only), ``scores``, ``boxes``, ``keypoints``, then ``vis`` (the drawing,
    when one was written). ``result`` is an :class:`~damofd.inference.ImageResult`."""
    rec: dict[str, Any] = {**result.to_dict(), "path": path}
    if vis is not None:
        rec["vis"] = vis
    return rec


def recorded_paths(path: str | Path) -> set[str]:
    """Paths recorded without an error in an existing JSON-lines record file (image records
    only; a torn last line from a killed run is ignored and that image is redone)."""
    done: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "frame" not in rec and not rec.get("error"):
                src = rec.get("path")
                if isinstance(src, str):
                    done.add(src)
    return done


class OutputNamer:
    """Output paths under ``out_dir`` for inputs, keeping their structure under their folder and
    never giving the same path twice (``name_1.jpg``, ``name_2.jpg`` ...)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._used: set[Path] = set()

    def name_for(self, source: str, base: Path | None, suffix: str | None = None) -> Path:
        if _is_url(source) or _has_scheme(source):
            rel = Path(source.rstrip("/").rsplit("/", 1)[-1] or "url.jpg")
        elif base is not None:
            rel = Path(source).relative_to(base)
        else:
            rel = Path(Path(source).name)
        if suffix is not None:
            rel = rel.with_suffix(suffix)
        cand, k = self.out_dir / rel, 1
        while cand in self._used:
            cand = self.out_dir / rel.with_name(f"{rel.stem}_{k}{rel.suffix}")
            k += 1
        self._used.add(cand)
        return cand

    def image_name_for(self, source: str, base: Path | None) -> Path:
        """:meth:`name_for` for a drawing: the input's name, ``.jpg`` when its extension is not
        one OpenCV writes as an image here."""
        vis = self.name_for(source, base)
        if vis.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
            vis = vis.with_suffix(".jpg")
        return vis
