"""Reading the organizer's YAML files (task files, ``challenge.yaml``): the same errors for both,
each naming the file and, for a bad value, the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose dates say where they are: PyYAML builds an unquoted
    ``2025-02-30`` (or month 13) with ``datetime``, whose ValueError carries no line."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a date: {e}", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _field_at(node: yaml.Node | None, mark: Any, path: tuple[str, ...] = ()) -> str | None:
    """The dotted field (``phases.0.opens``) of the node that starts at ``mark``, or None."""
    if node is None:
        return None
    if node.start_mark.index == mark.index and not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return ".".join(path)
    children: list[tuple[str, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(str(key.value), value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(n), value) for n, value in enumerate(node.value)]
    for name, child in children:
        found = _field_at(child, mark, (*path, name))
        if found is not None:
            return found
    return None


def _value_problem(text: str, e: yaml.constructor.ConstructorError) -> str:
    """``line N, field 'x.y': <problem>`` of a value YAML could not build."""
    mark = e.problem_mark
    where = f"line {mark.line + 1}" if mark is not None else "a value"
    try:
        field = _field_at(yaml.compose(text, Loader=_Loader), mark) if mark is not None else None
    except yaml.YAMLError:
        field = None
    return f"{where}{f', field {field!r}' if field else ''}: {e.problem}"


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict:
    """The mapping of fields in ``path``; an unreadable file, broken YAML, a value YAML cannot
    build (an impossible date) or anything but a mapping is ``error("<path>: ...")`` (``what``:
    "a task file", "a challenge file")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.constructor.ConstructorError as e:
        raise error(f"{path}: {_value_problem(text, e)}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    except ValueError as e:  # UnicodeDecodeError, or a value a constructor cannot build
        raise error(f"{path}: not readable as YAML: {e}") from None
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
