"""WIDER FACE prediction files: fast, strict reading into one flat array.

File layout (one file per image, the layout of the official tools and of RetinaFace/SCRFD dumps)::

    <root>/<event>/<image name>.txt
        line 1: image name (``0_Parade_marchingband_1_465`` or ``0--Parade/…_465.jpg``)
        line 2: N, the number of boxes
        N lines: x y w h score          (pixels, xywh with w = x2 − x1, no +1)

``<root>`` is a folder or a tar archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``)
read in memory, never extracted. Trailing spaces, blank lines, CRLF line ends, a UTF-8 BOM and a
count of 0 are accepted. Anything else is an :class:`~damofd.errors.InputError` naming the file
and line: a row without exactly five numbers, a token that is not a number, a non-finite value, a
missing/negative count line, a count that disagrees with the number of rows (unless
``check_count=False``), an image name on line 1 that differs from the file name, or two files for
the same image.

The parser is vectorised over the whole set: the bodies of all files are joined, the number of
tokens of every line is counted on the raw bytes with NumPy, and the numbers are converted by one
``np.fromstring`` call; the slow per-line path only runs to locate an error.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from damofd.constants import WIDER_IMAGE_EXTENSIONS
from damofd.errors import InputError

__all__ = [
    "WiderPredictions",
    "image_name",
    "predictions_from_mapping",
    "read_predictions",
]

_IMAGE_EXTS = WIDER_IMAGE_EXTENSIONS
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def image_name(text: str) -> str:
    """The image key used for matching: basename without an image extension.

    ``"0--Parade/0_Parade_marchingband_1_465.jpg"`` → ``"0_Parade_marchingband_1_465"``. (The
    reference uses ``rstrip('.jpg')``, a character-set strip; it agrees on every WIDER name.)
    """
    base = text.strip().replace("\\", "/").rsplit("/", 1)[-1]
    low = base.lower()
    for ext in _IMAGE_EXTS:
        if low.endswith(ext):
            return base[: -len(ext)]
    return base


_EVENT = re.compile(r"^\d+--\S+$")


def _event_of(folder: str) -> str | None:
    """``folder`` if it looks like a WIDER event (``12--Group``), else None (no event check)."""
    return folder if _EVENT.match(folder) else None


@dataclass(frozen=True, eq=False)
class WiderPredictions:
    """Detections of a set of images, flattened.

    Attributes:
        names: image key of every image (basename without ``.jpg``), length n.
        events: event folder (``<digits>--<name>``) of every image when the file sits in one or
            the key names one, else ``None``; a known event must match the ground truth.
        data: (N, 5) float64 ``[x, y, w, h, score]`` rows, pixels, xywh with ``w = x2 − x1``
            (no +1), raw (un-normalised) scores, in the order given.
        offsets: (n + 1,) int64; image ``i`` owns ``data[offsets[i]:offsets[i+1]]``.
        sources: file (or ``archive:member``, or ``<memory>[key]``) of every image.
    """

    names: tuple[str, ...]
    events: tuple[str | None, ...]
    data: np.ndarray
    offsets: np.ndarray
    sources: tuple[str, ...]
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.events) != n or len(self.sources) != n or self.offsets.shape != (n + 1,):
            raise InputError("inconsistent predictions (names/events/sources/offsets)")
        if self.data.ndim != 2 or self.data.shape[1] != 5 or self.offsets[-1] != len(self.data):
            raise InputError(f"predictions must be (N, 5) rows, got {self.data.shape}")
        index: dict[str, int] = {}
        for i, name in enumerate(self.names):
            j = index.setdefault(name, i)
            if j != i:
                raise InputError(
                    f"two prediction entries for image {name!r}: {self.sources[j]} and "
                    f"{self.sources[i]}"
                )
        self._index.update(index)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and image_name(name) in self._index

    def __getitem__(self, name: str) -> np.ndarray:
        """(N_i, 5) rows of image ``name`` (key, ``event/name`` or file name)."""
        i = self._index.get(image_name(name))
        if i is None:
            raise KeyError(name)
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def index_of(self, name: str) -> int | None:
        return self._index.get(name)

    @property
    def num_boxes(self) -> int:
        return int(self.offsets[-1])

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"event/name" (or "name"): (N_i, 5) array}`` views into :attr:`data`."""
        return {
            (f"{e}/{n}" if e else n): self.data[self.offsets[i] : self.offsets[i + 1]]
            for i, (e, n) in enumerate(zip(self.events, self.names))
        }


def predictions_from_mapping(mapping: Mapping[str, Any]) -> WiderPredictions:
    """Build :class:`WiderPredictions` from ``{key: (N, 5) array}``.

    A key is an image name, ``event/name`` or a path; a ``.jpg`` suffix is dropped. Rows are
    ``[x, y, w, h, score]`` in pixels (xywh, ``w = x2 − x1``); they are converted to float64 (the
    reference reads text into float64). An empty array of any shape with 0 elements means "no
    detections".
    """
    names: list[str] = []
    events: list[str | None] = []
    arrays: list[np.ndarray] = []
    sources: list[str] = []
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise InputError(f"prediction keys must be image names (str), got {key!r}")
        a = np.asarray(value, dtype=np.float64)
        if a.size == 0:
            a = a.reshape(0, 5)
        if a.ndim != 2 or a.shape[1] != 5:
            raise InputError(
                f"predictions[{key!r}] has shape {a.shape}; expected (N, 5) rows "
                f"[x, y, w, h, score] in pixels"
            )
        if not np.isfinite(a).all():
            r, c = np.argwhere(~np.isfinite(a))[0]
            raise InputError(f"predictions[{key!r}] row {r}, column {c} is {a[r, c]} (not finite)")
        parts = key.strip().replace("\\", "/").split("/")
        names.append(image_name(parts[-1]))
        events.append(_event_of(parts[-2]) if len(parts) >= 2 else None)
        arrays.append(a)
        sources.append(f"<memory>[{key!r}]")
    sizes = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 5))
    return WiderPredictions(tuple(names), tuple(events), data, offsets, tuple(sources))


# ----------------------------------------------------------------------------------------------
# file reading


def _is_tar(path: Path) -> bool:
    return path.is_file() and (
        path.name.lower().endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(str(path))
    )


def _wanted(relpath: str) -> bool:
    base = relpath.rsplit("/", 1)[-1]
    return base.lower().endswith(".txt") and not base.startswith(".")


def _decompress(path: Path, raw: bytes) -> bytes:
    """Whole-archive decompression in memory (faster than tarfile's seeking gzip stream)."""
    try:
        if raw[:2] == b"\x1f\x8b":
            import gzip

            return gzip.decompress(raw)
        if raw[:3] == b"BZh":
            import bz2

            return bz2.decompress(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            import lzma

            return lzma.decompress(raw)
    except (OSError, EOFError, ValueError) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"cannot decompress {str(path)!r}: {e}") from None
    return raw


def _plain_tar_members(data: bytes) -> list[tuple[str, bytes]] | None:
    """Regular-file members of an uncompressed ustar/GNU archive, or None when the archive uses
    anything but plain ustar/GNU headers and GNU long names (pax records, sparse files, links…):
    tarfile then takes over. About 10× faster than tarfile for thousands of small members."""
    out: list[tuple[str, bytes]] = []
    pos, n = 0, len(data)
    long_name: bytes | None = None
    while pos + 512 <= n:
        header = data[pos : pos + 512]
        if header.count(0) == 512:  # end-of-archive block
            return out
        if header[257:262] != b"ustar":
            return None
        stored = header[148:156].split(b"\0", 1)[0].strip()
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            checksum = int(stored, 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):
            return None
        kind = header[156:157]
        start = pos + 512
        if start + size > n or kind not in (b"0", b"\0", b"5", b"L", b"K"):
            return None
        if kind == b"L":  # GNU long name: the data is the next member's name
            long_name = data[start : start + size].split(b"\0", 1)[0]
        elif kind == b"0" or kind == b"\0":
            if long_name is not None:
                full = long_name
            else:
                name = header[0:100].split(b"\0", 1)[0]
                posix = header[257:263] == b"ustar\0"
                prefix = header[345:500].split(b"\0", 1)[0] if posix else b""
                full = (prefix + b"/" + name) if prefix else name
            out.append((full.decode("utf-8", "surrogateescape"), data[start : start + size]))
        if kind != b"L":
            long_name = None
        pos = start + (size + 511) // 512 * 512
    return out


def _iter_tar(path: Path) -> Iterable[tuple[str, str, bytes]]:
    """(source, relative path inside the archive, bytes) of every ``*.txt`` member."""
    import io

    data = _decompress(path, path.read_bytes())
    members = _plain_tar_members(data)
    if members is None:
        members = []
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                for m in tf:
                    f = tf.extractfile(m) if m.isfile() else None
                    if f is not None:
                        members.append((m.name, f.read()))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InputError(f"cannot read the archive {str(path)!r}: {e}") from None
    for name, content in members:
        if _wanted(name):
            yield f"{path}:{name}", name, content


def _iter_dir(root: Path) -> Iterable[tuple[str, str, bytes]]:
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if _wanted(rel):
                found.append((full, rel))
    for full, rel in found:
        with open(full, "rb") as f:
            yield full, rel, f.read()


@dataclass
class _Header:
    source: str
    name: str
    event: str | None
    count: int


def _parse_header(source: str, rel: str, raw: bytes) -> tuple[_Header, bytes]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    parts = raw.split(b"\n", 2)
    try:
        first = parts[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{source}:1: the image name is not UTF-8 text") from None
    if not first:
        raise InputError(f"{source}:1: expected the image name, found an empty line")
    if len(parts) < 2 or not parts[1].strip():
        raise InputError(f"{source}:2: expected the number of boxes, found nothing")
    count_text = parts[1].strip()
    try:
        count = int(count_text)
    except ValueError:
        raise InputError(
            f"{source}:2: expected the number of boxes, found {count_text.decode('latin-1')!r}"
        ) from None
    if count < 0:
        raise InputError(f"{source}:2: negative number of boxes {count}")
    rel_parts = rel.strip("/").split("/")
    stem = rel_parts[-1][: -len(".txt")]
    name = image_name(first)
    if name != stem:
        raise InputError(
            f"{source}:1: image name {first!r} does not match the file name {rel_parts[-1]!r}"
        )
    event = _event_of(rel_parts[-2]) if len(rel_parts) >= 2 else None
    return _Header(source, name, event, count), (parts[2] if len(parts) == 3 else b"")


_NUMBER_CHARS = frozenset(b"0123456789+-.eE")


def _locate_bad_token(headers: list[_Header], bodies: list[bytes]) -> InputError:
    """Slow path, only on error: find the first line the fast parser rejected."""
    for h, body in zip(headers, bodies):
        for k, line in enumerate(body.split(b"\n")):
            for tok in line.split():
                ok = set(tok) <= _NUMBER_CHARS or tok.lower().lstrip(b"+-") in (b"inf", b"nan")
                if ok:
                    try:
                        v = float(tok)
                    except ValueError:
                        ok = False
                    else:
                        if not np.isfinite(v):
                            return InputError(
                                f"{h.source}:{k + 3}: value {tok.decode()} is not finite"
                            )
                if not ok:
                    return InputError(
                        f"{h.source}:{k + 3}: {tok.decode('latin-1')!r} is not a number "
                        f"(line {line.decode('latin-1').strip()!r})"
                    )
    return InputError(f"{headers[0].source}: could not parse the prediction rows")


#: widths/heights below minus this many pixels make a prediction file an error (a few 1e-5 px
#: below zero come from float rounding of degenerate boxes, in the reference's files too)
NEGATIVE_SIZE_TOLERANCE = 1.0


def _read_headers(files: Iterable[tuple[str, str, bytes]]) -> tuple[list[_Header], list[bytes]]:
    """Header (lines 1–2) and body (the rest) of every file; error when there is none."""
    headers: list[_Header] = []
    bodies: list[bytes] = []
    for source, rel, raw in files:
        h, body = _parse_header(source, rel, raw)
        headers.append(h)
        bodies.append(body)
    if not headers:
        raise InputError("no prediction files (*.txt) found")
    return headers, bodies


def _token_starts(buf: np.ndarray) -> np.ndarray:
    """Byte offset of every token of ``buf``: a non-blank byte after a blank one (or at 0)."""
    blank = buf <= 32
    starts = np.flatnonzero(~blank[1:] & blank[:-1]) + 1
    if buf.size and not blank[0]:
        starts = np.concatenate(([0], starts))
    return starts


def _check_tokens_per_line(
    per_line: np.ndarray, first_line: np.ndarray, headers: list[_Header], bodies: list[bytes]
) -> None:
    """Every line holds 0 or 5 tokens; else an error naming the first offending line."""
    bad = np.flatnonzero((per_line != 0) & (per_line != 5))
    if bad.size:
        g = int(bad[0])
        k = int(np.searchsorted(first_line, g, side="right") - 1)
        local = g - int(first_line[k])
        line = bodies[k].split(b"\n")[local].decode("latin-1").strip()
        more = f" ({bad.size} such lines in all)" if bad.size > 1 else ""
        raise InputError(
            f"{headers[k].source}:{local + 3}: expected 5 numbers 'x y w h score', found "
            f"{int(per_line[g])}: {line!r}{more}"
        )


def _check_counts(headers: list[_Header], rows_per_file: np.ndarray) -> None:
    """Line 2 of every file equals its number of rows; else an error naming the first file."""
    declared = np.array([h.count for h in headers], dtype=np.int64)
    wrong = np.flatnonzero(declared != rows_per_file)
    if wrong.size:
        k = int(wrong[0])
        more = f" ({wrong.size} files disagree)" if wrong.size > 1 else ""
        raise InputError(
            f"{headers[k].source}:2: declares {declared[k]} boxes but holds "
            f"{rows_per_file[k]} rows{more} (truncated file? check_count=False / "
            f"--no-count-check to use the rows as they are)"
        )


def _convert_values(
    big: bytes, n_tokens: int, headers: list[_Header], bodies: list[bytes]
) -> np.ndarray:
    """The ``n_tokens`` numbers of the joined bodies ``big``, float64, all finite."""
    if n_tokens == 0:
        return np.zeros(0, dtype=np.float64)
    try:
        values = np.fromstring(big.decode("ascii"), dtype=np.float64, sep=" ")
    except (ValueError, UnicodeDecodeError):
        raise _locate_bad_token(headers, bodies) from None
    if values.size != n_tokens:
        raise _locate_bad_token(headers, bodies)
    if not np.isfinite(values).all():
        raise _locate_bad_token(headers, bodies)
    return values


def _check_sizes(
    rows: np.ndarray, offsets: np.ndarray, headers: list[_Header], bodies: list[bytes]
) -> None:
    """No width or height below ``-NEGATIVE_SIZE_TOLERANCE``; else an error naming the line."""
    neg = np.flatnonzero(
        (rows[:, 2] < -NEGATIVE_SIZE_TOLERANCE) | (rows[:, 3] < -NEGATIVE_SIZE_TOLERANCE)
    )
    if neg.size:
        # a clearly negative width/height is a box written as x1 y1 x2 y2, or a sign error: the
        # protocol would silently count it as a zero-overlap false positive. Rounding in the
        # decoder gives degenerate boxes a few 1e-5 px negative, which the reference writes too.
        r = int(neg[0])
        k = int(np.searchsorted(offsets, r, side="right") - 1)
        lines = [i for i, ln in enumerate(bodies[k].split(b"\n")) if ln.split()]
        local = lines[r - int(offsets[k])]
        more = f" ({neg.size} such rows in all)" if neg.size > 1 else ""
        raise InputError(
            f"{headers[k].source}:{local + 3}: negative width or height "
            f"(w={rows[r, 2]:g}, h={rows[r, 3]:g}); rows are 'x y w h score' with w, h >= 0 "
            f"(a sign error?){more}. A detector's own inverted boxes (negative distances of an "
            f"under-trained model, which `damofd eval` writes as they come) are legitimate: "
            f"allow_inverted=True (--allow-inverted) scores them as the protocol does, as "
            f"zero-overlap false positives"
        )


def _parse_files(
    files: Iterable[tuple[str, str, bytes]], check_count: bool, allow_inverted: bool = False
) -> WiderPredictions:
    headers, bodies = _read_headers(files)
    n_files = len(headers)
    # Join the bodies, one file per block of lines; body k starts at global line first_line[k].
    lines_per_body = np.array([b.count(b"\n") + 1 for b in bodies], dtype=np.int64)
    first_line = np.zeros(n_files + 1, dtype=np.int64)
    np.cumsum(lines_per_body, out=first_line[1:])
    big = b"\n".join(bodies)
    buf = np.frombuffer(big, dtype=np.uint8)

    # Tokens per line, on the raw bytes.
    starts = _token_starts(buf)
    newlines = np.flatnonzero(buf == 10)
    token_line = np.searchsorted(newlines, starts)  # global line of every token
    per_line = np.bincount(token_line, minlength=int(first_line[-1]))
    _check_tokens_per_line(per_line, first_line, headers, bodies)
    line_file = np.repeat(np.arange(n_files), lines_per_body)
    rows_per_file = np.bincount(line_file[per_line == 5], minlength=n_files)
    if check_count:
        _check_counts(headers, rows_per_file)

    values = _convert_values(big, int(starts.size), headers, bodies)
    offsets = np.zeros(n_files + 1, dtype=np.int64)
    np.cumsum(rows_per_file, out=offsets[1:])
    rows = values.reshape(-1, 5)
    if not allow_inverted:
        _check_sizes(rows, offsets, headers, bodies)
    return WiderPredictions(
        names=tuple(h.name for h in headers),
        events=tuple(h.event for h in headers),
        data=rows,
        offsets=offsets,
        sources=tuple(h.source for h in headers),
    )


def read_predictions(
    path: str | os.PathLike[str], *, check_count: bool = True, allow_inverted: bool = False
) -> WiderPredictions:
    """Read a folder or tar archive of per-image prediction ``.txt`` files (see module doc).

    Args:
        path: folder (searched recursively) or tar archive (read in memory).
        check_count: require line 2 of every file to equal its number of rows (default). With
            False the rows are used as they are.
        allow_inverted: accept rows with a negative width or height (a detector's inverted
            boxes; the protocol gives them IoU 0 with every face, so they count as false
            positives). Default: such a row is an error naming its file and line.

    Returns:
        :class:`WiderPredictions` with rows in file order (not yet sorted, not normalised).
    """
    p = Path(path)
    if p.is_dir():
        files = _iter_dir(p)
    elif _is_tar(p):
        files = _iter_tar(p)
    elif p.exists():
        raise InputError(
            f"{str(p)!r} is neither a folder nor a tar archive of prediction .txt files"
        )
    else:
        raise InputError(f"prediction path {str(p)!r} does not exist")
    try:
        return _parse_files(files, check_count, allow_inverted)
    except InputError as e:
        if str(e).startswith("no prediction files"):
            raise InputError(f"no prediction files (*.txt) found in {str(p)!r}") from None
        raise
