"""Reading every voxel of a task's files once, and remembering what was read.

SimpleITK, which nnU-Net reads with, decodes a truncated ``.nii.gz`` without an error (the lost
part as zeros) and returns NaN voxels as 0: a check through it would see clean data. NIfTI files
are therefore decoded here with ``gzip`` (which detects a truncated stream and a bad checksum)
and nibabel (which returns the stored voxels and detects a short data block); the geometry
(spacing, origin, direction) is read from the header with SimpleITK, i.e. as nnU-Net sees it.
Other formats are read with SimpleITK alone.

What a read found (``FileFacts``) is cached by content: the cache maps a path to its size,
mtime and inode, the sha256 of its bytes and the facts. A file whose size, mtime and inode are
unchanged is not read again; any other file is read and hashed. The content hashes are the data
identity of a job (``harness.tasks.preflight.TaskData``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.runs import write_json_atomic

#: Bump when what a read records changes: every cached entry is then read again.
FACTS_VERSION = 1
Role = Literal["image", "label"]
#: Distinct values are recorded for label maps and masks up to this many (more is an error anyway).
MAX_LABEL_VALUES = 256


@dataclass(frozen=True)
class FileFacts:
    """What one full read of a file found. Geometry is in SimpleITK's (x, y, z) order, ``shape``
    in array (z, y, x) order; ``error`` is set when the file could not be decoded at all."""

    sha256: str
    size: int
    error: str | None = None
    dimension: int | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    components: int | None = None
    dtype: str | None = None
    nonfinite: int = 0
    #: label maps and masks: the distinct voxel values (None for images, or when not integers)
    values: tuple[float, ...] | None = None
    non_integer_values: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> FileFacts:
        tuples = ("shape", "spacing", "origin", "direction", "values")
        fields: dict[str, Any] = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in data.items()}
        return cls(**fields)


# ----------------------------------------------------------------------------- reading
def read_facts(path: Path, role: Role) -> FileFacts:
    """Read ``path`` completely and record what it holds; never raises for a bad file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        return FileFacts(sha256="", size=0, error=f"cannot read: {e.strerror or e}")
    digest, size = hashlib.sha256(raw).hexdigest(), len(raw)
    try:
        header = _header(path)
        if path.name.endswith((".nii.gz", ".nii")):
            array = _nifti_voxels(path, raw)
        else:
            import SimpleITK as sitk

            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except _Unreadable as e:
        return FileFacts(sha256=digest, size=size, error=str(e))
    nonfinite = 0
    if array.dtype.kind in "fc":
        nonfinite = int(array.size - np.count_nonzero(np.isfinite(array)))
    values, non_integer = None, False
    if role == "label":
        values, non_integer = _distinct_values(array)
    return FileFacts(
        sha256=digest,
        size=size,
        nonfinite=nonfinite,
        values=values,
        non_integer_values=non_integer,
        dtype=str(array.dtype),
        **header,
    )


class _Unreadable(Exception):
    """The file cannot be decoded; the message says why (it is prefixed by the path later)."""


def _header(path: Path) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise _Unreadable(f"not a readable image: {lines[-1] if lines else 'unknown format'}") from None
    return {
        "dimension": int(reader.GetDimension()),
        "shape": tuple(int(s) for s in reader.GetSize())[::-1],
        "spacing": tuple(float(s) for s in reader.GetSpacing()),
        "origin": tuple(float(s) for s in reader.GetOrigin()),
        "direction": tuple(float(s) for s in reader.GetDirection()),
        "components": int(reader.GetNumberOfComponents()),
    }


def _nifti_voxels(path: Path, raw: bytes) -> np.ndarray:
    import nibabel

    data = raw
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(raw)
        except EOFError:
            raise _Unreadable(f"truncated: the gzip stream ends early ({len(raw)} bytes on disk)") from None
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise _Unreadable(f"corrupt gzip data: {e}") from None
    kinds = {348: nibabel.Nifti1Header, 540: nibabel.Nifti2Header}  # by sizeof_hdr, either byte order
    kind = kinds.get(int.from_bytes(data[:4], "little")) or kinds.get(int.from_bytes(data[:4], "big"))
    if kind is None or len(data) < kind.template_dtype.itemsize:
        raise _Unreadable("not a readable NIfTI file: no NIfTI-1 or NIfTI-2 header")
    try:
        header = kind.from_fileobj(io.BytesIO(data[: kind.template_dtype.itemsize]), check=False)
        shape, dtype = header.get_data_shape(), header.get_data_dtype()
        offset = max(int(header.get_data_offset()), header.template_dtype.itemsize + 4)
    except Exception as e:
        raise _Unreadable(f"not a readable NIfTI file: {_one_line(e)}") from None
    count = int(np.prod(shape, dtype=np.int64))
    need = offset + count * dtype.itemsize
    if len(data) < need:
        raise _Unreadable(f"truncated: {len(data) - offset} of {count * dtype.itemsize} bytes of voxel data")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)  # no copy
    slope, inter = header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0):  # what a reader returns: the scaled values
        array = array * (1.0 if slope is None else slope) + (0.0 if inter is None else inter)
    return array


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _distinct_values(array: np.ndarray) -> tuple[tuple[float, ...] | None, bool]:
    """The distinct values of a label map (fast for small integer types), and whether some are
    not integers."""
    flat = np.asarray(array).ravel()
    if flat.size == 0:
        return (), False
    if flat.dtype.kind in "iub":
        lo = int(flat.min())
        if int(flat.max()) - lo < 1 << 16:
            counts = np.bincount((flat.astype(np.int64) - lo) if lo else flat.astype(np.int64, copy=False))
            values = np.flatnonzero(counts) + lo
        else:
            values = np.unique(flat)
        return tuple(float(v) for v in values[: MAX_LABEL_VALUES + 1]), False
    finite = flat[np.isfinite(flat)] if flat.dtype.kind in "fc" else flat
    values = np.unique(finite)
    non_integer = bool(np.any(values != np.round(values)))
    return tuple(float(v) for v in values[: MAX_LABEL_VALUES + 1]), non_integer


# ----------------------------------------------------------------------------- the cache
def _stat_key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class FactsCache:
    """Facts of files already read, keyed by absolute path and checked against (size, mtime,
    inode). One JSON file; written atomically, so concurrent jobs can at worst lose an entry."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and data.get("version") == FACTS_VERSION:
                    self.entries = dict(data.get("files") or {})
            except (OSError, ValueError):
                self.entries = {}  # a broken cache is only a slower check

    def lookup(self, path: Path, role: Role, st: os.stat_result) -> FileFacts | None:
        entry = self.entries.get(str(path))
        if not entry or entry.get("stat") != _stat_key(st) or entry.get("role") != role:
            return None
        try:
            return FileFacts.from_dict(entry["facts"])
        except (KeyError, TypeError):
            return None

    def store(self, path: Path, role: Role, st: os.stat_result, facts: FileFacts) -> None:
        self.entries[str(path)] = {"stat": _stat_key(st), "role": role, "facts": asdict(facts)}
        self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        merged = {}
        try:  # keep what another process added meanwhile
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == FACTS_VERSION:
                merged = dict(data.get("files") or {})
        except (OSError, ValueError):
            pass
        merged.update(self.entries)
        try:
            write_json_atomic(self.path, {"version": FACTS_VERSION, "files": merged})
        except OSError:
            return  # the cache only saves time; an unwritable one must not fail a check
        self.changed = False


@dataclass(frozen=True)
class ReadStats:
    read: int
    cached: int


def read_all(
    files: Iterable[tuple[Path, Role]], cache: FactsCache, workers: int | None = None
) -> tuple[dict[Path, FileFacts], ReadStats]:
    """Facts of every ``(path, role)``: from the cache where the file is unchanged, otherwise
    read in parallel (decompression, hashing and the voxel checks release the GIL)."""
    facts: dict[Path, FileFacts] = {}
    todo: list[tuple[Path, Role, os.stat_result]] = []
    for path, role in dict.fromkeys(files):
        path = Path(path)
        try:
            st = path.stat()
        except OSError as e:
            facts[path] = FileFacts(sha256="", size=0, error=f"cannot read: {e.strerror or e}")
            continue
        hit = cache.lookup(path, role, st)
        if hit is not None:
            facts[path] = hit
        else:
            todo.append((path, role, st))
    workers = workers or min(8, os.cpu_count() or 1)
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for (path, role, st), result in zip(todo, pool.map(lambda t: read_facts(t[0], t[1]), todo)):
                facts[path] = result
                if result.error is None or not result.error.startswith("cannot read"):
                    cache.store(path, role, st, result)
    return facts, ReadStats(read=len(todo), cached=len(facts) - len(todo))
