"""The labels file of a classification task (a ``case_id,label`` CSV), read one way for the data
check, which reports every bad line at once, and for a job, which stops at the first."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LabelsFile:
    path: Path
    #: ``case_id -> label`` of the good lines, in file order
    labels: dict[str, str] = field(default_factory=dict)
    #: what is wrong, one message per problem (the file's path not included), in file order
    problems: list[str] = field(default_factory=list)
    #: cases on a line whose label is not one of the task's classes
    mislabelled: set[str] = field(default_factory=set)


def read_labels_file(path: Path, classes: Sequence[str]) -> LabelsFile:
    """Every line of ``path`` checked: the columns, an empty case id, a label not in ``classes``,
    a case listed twice, an unreadable or empty file. Never raises for a bad file."""
    table = LabelsFile(Path(path))
    classes = list(classes)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "case_id" not in header or "label" not in header:
                table.problems.append(f"needs the columns case_id,label; found {header or 'no header'}")
                return table
            reader.fieldnames = header
            first: dict[str, int] = {}
            for row in reader:
                case, label = (row.get("case_id") or "").strip(), (row.get("label") or "").strip()
                line = reader.line_num
                if not case and not label:
                    continue  # a blank line
                if not case:
                    table.problems.append(f"line {line}: empty case_id")
                elif label not in classes:
                    table.problems.append(
                        f"line {line}: case {case!r} has label {label!r}, not one of the task's classes {classes}"
                    )
                    table.mislabelled.add(case)
                elif case in table.labels:
                    table.problems.append(f"case {case!r} is listed twice (lines {first[case]} and {line})")
                else:
                    table.labels[case], first[case] = label, line
    except OSError as e:
        table.problems.append(f"cannot read: {e.strerror or e}")
        return table
    except (csv.Error, UnicodeDecodeError) as e:
        table.problems.append(f"not a readable CSV file: {e}")
        return table
    if not table.labels:
        table.problems.append("lists no usable case")
    return table
