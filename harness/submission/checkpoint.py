"""Reading an uploaded checkpoint without ever running code from it.

Three layers, cheapest first:

1. ``check_file``: a regular, readable file under the size limit, judged from ``stat`` alone
   (nothing is read from a file that is too large).
2. A static scan of the pickle stream (``pickletools.genops`` parses opcodes, it never builds
   objects): every global the pickle names is collected, and a file naming any global outside
   torch's weights-only allowlist is rejected with that global named, before any unpickler sees it.
3. ``torch.load(weights_only=True, mmap=True)``: torch's restricted unpickler is the real gate
   (it refuses anything not allowlisted even if the scan missed it); ``mmap`` leaves the tensor
   data on disk until a check touches it, so loading costs no copy of the weights.

Everything that goes wrong becomes a ``SubmissionError`` with a one-line message naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickletools
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from harness.submission import DEFAULT_MAX_SIZE

#: The first pickle of a legacy (pre-zip, ``_use_new_zipfile_serialization=False``) torch file.
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_ZIP_MAGIC = b"PK\x03\x04"
#: A legacy torch file is five pickles (magic, protocol, sys info, object, storage keys) + data.
_MAX_LEGACY_PICKLES = 5
#: Limits for the static scan, so that a hostile length field cannot make it read gigabytes.
_SCAN_MAX_LINE = 1 << 20
_SCAN_MAX_READ = 256 << 20


class SubmissionError(ValueError):
    """The submission cannot be used; the message names the file and the problem."""


class UnreadableSubmissionError(SubmissionError):
    """The path is not a readable regular file (a usage error: ``harness validate`` exits 2)."""


def check_file(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> int:
    """Return the size in bytes of ``path`` after checking it is a readable regular file of
    1 .. ``max_size`` bytes. Only ``stat`` and ``open`` are used: no byte is read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UnreadableSubmissionError(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableSubmissionError(f"{path}: cannot stat the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise UnreadableSubmissionError(f"{path}: {kind}; expected a .pth checkpoint file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UnreadableSubmissionError(f"{path}: cannot open the file ({exc.strerror or exc})") from None
    size = int(info.st_size)
    if size > max_size:
        raise SubmissionError(
            f"{path}: file is {format_bytes(size)} ({size} bytes), over the limit of "
            f"{format_bytes(max_size)} ({max_size} bytes); it was not read"
        )
    if size == 0:
        raise SubmissionError(f"{path}: the file is empty")
    return size


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the file, read in ``chunk_bytes`` pieces into one reused buffer (the page
    cache holds the file, the process does not)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def format_bytes(n: int) -> str:
    """``410.2 MB`` style (decimal units below a GiB, binary ``GiB`` above, as limits are)."""
    if n >= 1024**3:
        return f"{n / 1024**3:.1f} GiB"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    if n >= 1000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# Static pickle scan


class _ScanLimitExceeded(Exception):
    pass


class _BoundedReader:
    """File wrapper for ``pickletools.genops``: refuses absurd reads instead of allocating them."""

    def __init__(self, f: IO[bytes]):
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > _SCAN_MAX_READ:
            raise _ScanLimitExceeded(f"a pickle item of {n} bytes")
        return self._f.read(n)

    def readline(self) -> bytes:
        line = self._f.readline(_SCAN_MAX_LINE)
        if len(line) == _SCAN_MAX_LINE and not line.endswith(b"\n"):
            raise _ScanLimitExceeded("a pickle text line over 1 MiB")
        return line

    def tell(self) -> int:
        return self._f.tell()


_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _python3_name(module: str, name: str) -> str:
    """Apply pickle's Python 2 -> 3 renaming (protocol-2 pickles written by Python 3 store
    ``__builtin__``), as torch's unpickler does, so names compare with its allowlist."""
    try:
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:  # pragma: no cover - older torch
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def scan_pickle_globals(f: IO[bytes]) -> tuple[list[str], Any, int]:
    """Parse one pickle from ``f`` (up to its STOP opcode) without building any object.

    Returns the globals it references (``module.name``, in order of first use), the value of
    its single LONG/INT opcode when the pickle is just one number (how a legacy torch file
    starts) else None, and the number of opcodes. ``STACK_GLOBAL`` operands are resolved through
    the memo; an operand that is not a literal string is reported as ``<unresolved global>``.
    Raises ``ValueError`` when the bytes are not a pickle and ``_ScanLimitExceeded`` on absurd
    lengths.
    """
    found: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # the last few values pushed, enough to resolve STACK_GLOBAL
    numbers: list[Any] = []
    n_ops = 0
    # genops needs only read/readline/tell; typeshed asks for a full IO[bytes]
    for opcode, arg, _pos in pickletools.genops(_BoundedReader(f)):  # type: ignore[arg-type]
        n_ops += 1
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            _add(found, _python3_name(module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            stack_module, stack_attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            if isinstance(stack_module, str) and isinstance(stack_attr, str):
                _add(found, _python3_name(stack_module, stack_attr))
            else:
                _add(found, "<unresolved global>")
            pushed.append(None)
        elif name in ("EXT1", "EXT2", "EXT4"):
            _add(found, f"<copyreg extension {arg}>")
            pushed.append(None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _MEMO_PUT_OPS:
            assert arg is not None  # genops always decodes the memo index of PUT/GET
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in _MEMO_GET_OPS:
            assert arg is not None
            pushed.append(memo.get(int(arg)))
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
            numbers.append(arg)
            pushed.append(None)
        elif opcode.stack_after:
            pushed.append(None)
        del pushed[:-4]
    only_number = numbers[0] if len(numbers) == 1 and n_ops <= 4 else None
    return found, only_number, n_ops


def _add(found: list[str], name: str) -> None:
    if name not in found:
        found.append(name)


def _allowed_globals() -> set[str] | None:
    """Names torch's weights-only unpickler accepts (its defaults plus any safe globals added in
    this process), or None where this torch does not expose them (torch then decides alone)."""
    try:
        from torch import _weights_only_unpickler as wou
    except ImportError:  # pragma: no cover
        return None
    try:
        return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except AttributeError:  # pragma: no cover - private API moved
        return None


def _describe_global(name: str) -> str:
    module, _, attr = name.rpartition(".")
    if module in ("posix", "nt"):  # os.system is pickled as posix.system / nt.system
        return f"{name} (os.{attr})"
    return name


def _reject_disallowed(path: Path, referenced: Iterable[str], where: str) -> None:
    allowed = _allowed_globals()
    if allowed is None:
        return
    bad = [g for g in referenced if g not in allowed]
    if bad:
        shown = ", ".join(_describe_global(g) for g in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise SubmissionError(
            f"{path}: rejected unsafe checkpoint: {where} references the global "
            f"{shown}, which a weights-only load does not allow (a checkpoint may contain only "
            "tensors, numbers, strings and containers); nothing from the file was executed"
        )


# --------------------------------------------------------------------------------------------
# Loading


def load_checkpoint_safely(path: Path) -> tuple[Any, list[str]]:
    """Load a torch checkpoint with no arbitrary unpickling; tensors stay memory-mapped.

    Returns the loaded object and notes worth a warning (e.g. the legacy format, which cannot be
    memory-mapped and is read into memory). Raises ``SubmissionError`` with a one-line message.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC or zipfile.is_zipfile(path):
        _scan_zip(path)
        return _torch_load(path, mmap=True), []
    _scan_non_zip(path)
    note = (
        "checkpoint uses torch's legacy (non-zip) format: it cannot be memory-mapped and was read "
        "into memory; torch.save has written zip files since torch 1.6"
    )
    return _torch_load(path, mmap=False), [note]


def _scan_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            data_pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if not data_pkl:
                raise SubmissionError(f"{path}: a zip archive without data.pkl: not a checkpoint written by torch.save")
            with archive.open(data_pkl[0]) as f:
                try:
                    referenced, _, _ = scan_pickle_globals(f)
                except (ValueError, _ScanLimitExceeded, zipfile.BadZipFile, EOFError, OSError):
                    return  # unparseable: torch's unpickler will refuse it with its own reason
    except zipfile.BadZipFile as exc:
        raise SubmissionError(
            f"{path}: truncated or corrupted checkpoint: the file starts like a torch zip archive "
            f"but its zip directory cannot be read ({exc})"
        ) from None
    _reject_disallowed(path, referenced, "its pickle (data.pkl)")


def _scan_non_zip(path: Path) -> None:
    referenced: list[str] = []
    first_number = None
    parsed = 0
    with open(path, "rb") as f:
        for index in range(_MAX_LEGACY_PICKLES):
            try:
                found, number, n_ops = scan_pickle_globals(f)
            except (ValueError, _ScanLimitExceeded, EOFError):
                break
            if n_ops < 2:  # a lone STOP byte is not a pickle of anything
                break
            parsed += 1
            referenced += [g for g in found if g not in referenced]
            if index == 0:
                first_number = number
            if not f.peek(1):
                break
    _reject_disallowed(path, referenced, "its pickle")
    if parsed == 0:
        raise SubmissionError(
            f"{path}: not a PyTorch checkpoint: neither a zip archive written by torch.save nor a "
            "pickle (random or corrupted bytes?)"
        )
    if first_number != _LEGACY_TORCH_MAGIC:
        raise SubmissionError(
            f"{path}: not a PyTorch checkpoint: a plain pickle file, not one written by torch.save; "
            "save the checkpoint dict with torch.save"
        )


_GLOBAL_IN_TORCH_ERROR = re.compile(r"GLOBAL ([\w.<>]+)")


def _torch_load(path: Path, *, mmap: bool) -> Any:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol / FutureWarning chatter, not the user's problem
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        match = _GLOBAL_IN_TORCH_ERROR.search(text)
        if match:
            raise SubmissionError(
                f"{path}: rejected unsafe checkpoint: its pickle references the global "
                f"{_describe_global(match.group(1))}, which a weights-only load does not allow; "
                "nothing from the file was executed"
            ) from None
        raise SubmissionError(f"{path}: the checkpoint pickle cannot be loaded safely: {_torch_reason(text)}") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise SubmissionError(f"{path}: truncated checkpoint: the data ends early ({exc or 'end of file'})") from None
    except RuntimeError as exc:
        text = str(exc)
        if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
            raise SubmissionError(f"{path}: truncated or corrupted checkpoint: {_torch_reason(text)}") from None
        raise SubmissionError(f"{path}: cannot be loaded as a torch checkpoint: {_torch_reason(text)}") from None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise SubmissionError(
            f"{path}: cannot be loaded as a torch checkpoint: {type(exc).__name__}: {_torch_reason(str(exc))}"
        ) from None


def _torch_reason(text: str) -> str:
    """The informative line of a torch error (its messages are paragraphs of advice)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(
            (
                "Weights only load failed",
                "In PyTorch 2.6",
                "Re-running",
                "Check the documentation",
                "Please file an issue",
            )
        ):
            continue
        line = line.removeprefix("WeightsUnpickler error:").strip() or line
        first_sentence, dot, rest = line.partition(". ")
        return first_sentence + ("." if dot else "") if len(line) > 160 and rest else line
    return lines[0] if lines else "unknown error"
