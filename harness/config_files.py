"""Reading the organizer's YAML files (task files, ``challenge.yaml``): the same errors for both,
each naming the file and, for a bad value, the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict:
    """The mapping of fields in ``path``; an unreadable file, broken YAML or anything but a
    mapping is ``error("<path>: ...")`` (``what``: "a task file", "a challenge file")."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} must be a mapping of fields, got {type(data).__name__}")
    return data


def describe_validation(error: ValidationError) -> str:
    """Each problem as ``field 'phases.0.counts': <message>``, joined by '; '."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-after", "function-before")))
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)
