"""Compact fingerprints of a checkpoint's stem and encoder, to find uploads derived from others.

A fingerprint holds, for every transferred weight matrix or kernel (``Track.is_transferred``,
two or more dimensions; aliases sharing a storage once), the values at ``SAMPLES`` positions
drawn from a generator seeded by the key's name, so every file of a track is sampled at the same
positions and two fingerprints compare tensor by tensor without either file. It is read from the
memory-mapped weights the validation already holds (a few thousand values per tensor: a few
hundred pages of a file the hash has just brought into the page cache) and is JSON (base64
float32).

``compare`` gives, per common tensor, the Pearson correlation of the sampled values (the cosine
of the centred values), the share of tensors above ``TENSOR_THRESHOLD`` and their median;
``flag`` decides by ``SHARE_THRESHOLD``. Nothing is rejected on it: the organizers read the
figures (docs/challenge.md has the calibration). Centred, because a plain cosine counts a common
offset (a kernel's mean) as agreement. Vectors (norm weights, biases, LayerScale) are left out:
they start at the same constant in every network, so two trainings of one initialisation move
them apart by their data, not by their origin (calibration: with them, two pre-trainings from one
initialisation had only 29 % of tensors alike; without, 100 %), and a constant one carries no
evidence at all (a sampled tensor constant in either file is left out for that reason too).
"""

from __future__ import annotations

import base64
import hashlib
import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from harness.tracks import get_track

#: Fingerprint format version: two fingerprints of different versions are not compared.
VERSION = 1
#: Values sampled per tensor (all of a smaller tensor). 2048 keeps the correlation of two
#: independent tensors within about +-0.07 (3 sigma), far from any derived copy's.
SAMPLES = 2048
TENSOR_THRESHOLD = 0.5
"""A tensor counts as alike above this correlation. Calibrated (docs/challenge.md): two
independent seeds stay within about +-0.07 (3 standard errors of 2048 samples; lowest measured
-0.06); a copy trained a few more steps at lr 1e-3, two trainings from one initialisation and a
copy with Gaussian noise as large as the tensor's own spread (r = 0.71) stay at 0.68 or above on
every tensor."""
SHARE_THRESHOLD = 0.5
"""A pair is flagged when more than this share of the compared tensors is above
``TENSOR_THRESHOLD``. Calibrated: independent seeds give 0 %, every derived case 100 %; half is
a margin both ways (a team that re-initialised or retrained part of a copied encoder is still
flagged while more than half of it stays close)."""
#: A sampled tensor whose centred values have a smaller norm than this is constant: no evidence.
_CONSTANT = 1e-12


def _positions(key: str, numel: int) -> torch.Tensor:
    """The sampled flat positions of tensor ``key`` (all of a small one), sorted so that reading
    them from the mapped file walks it forward."""
    if numel <= SAMPLES:
        return torch.arange(numel)
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, numel, (SAMPLES,), generator=generator).sort().values


def fingerprint(weights: Mapping[str, torch.Tensor], track: str) -> dict[str, Any]:
    """The fingerprint of ``weights`` (a state dict, e.g. memory-mapped) of ``track``: a JSON-able
    dict ``{version, track, samples, tensors: {key: {shape, values}}}``."""

    spec = get_track(track)
    tensors: dict[str, dict[str, Any]] = {}
    for key, tensor in distinct_tensors(weights).items():
        if not spec.is_transferred(key) or not tensor.is_floating_point() or tensor.dim() < 2:
            continue
        flat = tensor.detach().reshape(-1)  # a view of the mapped file when contiguous
        values = flat[_positions(key, flat.numel())].to(torch.float32).numpy()
        tensors[key] = {
            "shape": list(tensor.shape),
            "values": base64.b64encode(values.astype("<f4").tobytes()).decode("ascii"),
        }
    return {"version": VERSION, "track": spec.name, "samples": SAMPLES, "tensors": tensors}


def _values(entry: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["values"]), dtype="<f4").astype(np.float64)


def decode(fp: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.ndarray | None]]:
    """key -> (shape, centred unit vector, or None for a constant tensor): what ``compare`` uses;
    decode once to compare one fingerprint with many."""
    out = {}
    for key, entry in fp["tensors"].items():
        v = _values(entry)
        v = v - v.mean()
        norm = float(np.linalg.norm(v))
        out[key] = (tuple(entry["shape"]), v / norm if norm > _CONSTANT else None)
    return out


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of two fingerprints (or two ``decode``d ones): ``compared`` tensors (common
    keys of one shape, not constant in either), the ``share`` of them above
    ``TENSOR_THRESHOLD``, the ``median`` and ``min`` correlation, and ``similar`` (``flag``)."""
    da = a if "tensors" not in a else _decoded(a)
    db = b if "tensors" not in b else _decoded(b)
    if da is None or db is None:
        return {"compared": 0, "share": 0.0, "median": None, "min": None, "similar": False}
    r = []
    for key, (shape, va) in da.items():
        other = db.get(key)
        if other is None or other[0] != shape or va is None or other[1] is None or len(va) != len(other[1]):
            continue
        r.append(float(np.dot(va, other[1])))
    share = sum(x > TENSOR_THRESHOLD for x in r) / len(r) if r else 0.0
    figures = {
        "compared": len(r),
        "share": round(share, 4),
        "median": round(statistics.median(r), 4) if r else None,
        "min": round(min(r), 4) if r else None,
    }
    return {**figures, "similar": flag(figures)}


def _decoded(fp: Mapping[str, Any]) -> dict | None:
    if fp.get("version") != VERSION:
        return None
    return decode(fp)


def flag(figures: Mapping[str, Any]) -> bool:
    """Whether ``compare``'s figures make a pair similar enough for the organizers to look at:
    more than ``SHARE_THRESHOLD`` of the compared tensors above ``TENSOR_THRESHOLD``."""
    return bool(figures.get("compared")) and float(figures["share"]) > SHARE_THRESHOLD


def distinct_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """First key of every distinct tensor (aliases, e.g. ResEnc-L's ``decoder.encoder.*`` and
    ``all_modules.N``, share a storage, offset, shape and stride)."""
    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, t in weights.items():
        ident = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
            if t.device.type == "cpu" and t.layout == torch.strided
            else (id(t),)
        )
        if ident not in seen:
            seen[ident] = key
            out[key] = t
    return out
