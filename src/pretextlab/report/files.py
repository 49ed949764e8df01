"""A study folder's files as the report reads and writes them, safely: a folder may be broken or made by someone else.

Reading: a file larger than any a study writes, not text, not JSON or CSV, written by a newer pretextlab, or
holding a value of another type than pretextlab.schema describes, is refused in one line (a UserError naming the
file and the field) before anything is drawn: never a traceback, never a hang on a huge value. The checks are
small typed predicates (`fields`, `list_of`, NUMBER, ...); `check_of` derives a file's from its schema TypedDict,
and `read_record` reads a versioned file through schema.upgrade, so that the report sees the current shape only.

Writing: the report writes only its own files inside the study, never through a link (`refuse_link`), and a
full disk is one line (pretextlab.io's WriteError).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .. import schema
from ..errors import UserError

MAX_BYTES = 64 * 2**20  # far beyond any JSON or CSV file a study writes; a larger one is refused unread
MAX_ITEMS = 100_000  # items of one list or object (a 1000-class confusion matrix has 1000 rows)
MAX_TEXT = 1000  # characters of one name (class, task, setting)
MAX_CLASSES = 10_000  # rows of a confusion matrix
FIX = "restore it from a copy, or re-run the study that wrote it"

# A check returns None for a value it accepts, else (the field's dotted path inside it, the value, what was
# expected), so that the one-line error can say where and what.
Problem = tuple[str, Any, str]
Check = Callable[[Any], "Problem | None"]
MISSING = object()  # the value of a required field that is absent


def bad_file(path: Path, what: str) -> UserError:
    return UserError(f"{path} {what}; {FIX}")


def kind(test: Callable[[Any], bool], what: str) -> Check:
    return lambda v: None if test(v) else ("", v, what)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


NUMBER = kind(lambda v: _real(v) and math.isfinite(v), "a finite number")
POSITIVE = kind(lambda v: _real(v) and math.isfinite(v) and v > 0, "a positive number")
LOSS = kind(_real, "a number")  # a diverged run's loss is NaN, and the report shows it as "–"
COUNT = kind(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number")
FRACTION = kind(lambda v: _real(v) and 0 < v <= 1, "a label fraction (0 < f <= 1)")
FLAG = kind(lambda v: isinstance(v, bool), "true or false")
TEXT = kind(lambda v: isinstance(v, str) and len(v) <= MAX_TEXT, f"a string (at most {MAX_TEXT} characters)")
NAME = kind(lambda v: isinstance(v, str) and 0 < len(v) <= MAX_TEXT and not set(v) & set("/\\\0")
            and v not in (".", ".."), "a name (no / or \\)")
OBJECT = kind(lambda v: isinstance(v, dict) and len(v) <= MAX_ITEMS, "an object")
ANY: Check = lambda v: None  # noqa: E731
INTERVAL = kind(lambda v: isinstance(v, list) and len(v) == 2 and not any(map(NUMBER, v)), "an interval [lo, hi]")
MATRIX = kind(lambda v: isinstance(v, list) and 0 < len(v) <= MAX_CLASSES and all(
    isinstance(row, list) and len(row) == len(v) and not any(NUMBER(x) or x < 0 for x in row) for row in v),
    "a square matrix of counts")


def optional(check: Check) -> Check:
    """null, or what `check` accepts."""
    return lambda v: None if v is None else check(v)


def list_of(check: Check, what: str) -> Check:
    """A list (at most MAX_ITEMS long, refused before its items are looked at) of what `check` accepts."""
    return kind(lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS and not any(map(check, v)), what)


def dict_of(check: Check) -> Check:
    """An object whose every value `check` accepts (its keys are strings in JSON)."""
    def test(v: Any) -> Problem | None:
        if (p := OBJECT(v)) is not None:
            return p
        return next((_inside(k, p) for k, x in v.items() if (p := check(x)) is not None), None)
    return test


def fields(required: tuple[str, ...] = (), **checks: Check) -> Check:
    """An object whose listed fields, where present, pass their checks (the `required` ones must be present)."""
    def test(v: Any) -> Problem | None:
        if not isinstance(v, dict):
            return "", v, "an object"
        if missing := [k for k in required if k not in v]:
            return missing[0], MISSING, "a value"
        return next((_inside(k, p) for k, c in checks.items() if k in v and (p := c(v[k])) is not None), None)
    return test


def _inside(key: str, p: Problem) -> Problem:
    return (f"{key}.{p[0]}" if p[0] else key), p[1], p[2]


# schema.py's types, as checks: a plain type's, and each Annotated tag's (with what the one-line error says)
PLAIN: dict[Any, tuple[Check, str]] = {
    float: (NUMBER, "a finite number"), int: (COUNT, "a whole number"), bool: (FLAG, "true or false"),
    str: (TEXT, "a string"), Any: (ANY, "anything")}
TAGS: dict[str, tuple[Check, str]] = {
    "real": (LOSS, "a number"), "positive": (POSITIVE, "a positive number"),
    "fraction": (FRACTION, "a label fraction (0 < f <= 1)"), "name": (NAME, "a name (no / or \\)"),
    "interval": (INTERVAL, "an interval [lo, hi]"), "matrix": (MATRIX, "a square matrix of counts")}


@functools.cache
def check_of(tp: Any) -> Check:
    """The check of a value of schema type `tp`: a TypedDict's fields where present (its required ones present
    too), X | None, list[X], dict[str, X], Annotated[X, tag] (TAGS) and the plain types of PLAIN."""
    return _typed(tp)[0]


def _typed(tp: Any) -> tuple[Check, str]:
    """check_of's check, and what it accepts in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return TAGS[args[1]]
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return fields(tuple(k for k in hints if k in tp.__required_keys__),
                      **{k: check_of(h) for k, h in hints.items()}), "an object"
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"{tp}: only X | None is a schema type")
        check, what = _typed(rest[0])
        return optional(check), f"{what} or null"
    if origin is list:
        return list_of(check_of(args[0]), f"a list, each {_typed(args[0])[1]}"), "a list"
    if origin is dict:
        return (OBJECT, "an object") if args[1] is Any else (dict_of(check_of(args[1])), "an object")
    if tp in PLAIN:
        return PLAIN[tp]
    raise TypeError(f"{tp} is no schema type")


def preview(v: Any) -> str:
    """A value as a one-line error quotes it: short, whatever its size."""
    if v is MISSING:
        return "missing"
    if isinstance(v, list):
        return f"a list of {len(v)} item" + ("s" if len(v) != 1 else "")
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, str) and len(v) > 40:
        v = v[:40] + "..."
    return json.dumps(v)  # escapes newlines and quotes, so the message stays one line


def _read_text(path: Path) -> str:
    """A regular file's text; refused when larger than any a study writes, or not UTF-8."""
    path = Path(path)
    if not path.is_file():  # a folder, a pipe (reading it would wait forever) or a device
        raise bad_file(path, "is not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise bad_file(path, f"is {size / 2**20:.0f} MiB, larger than any file a study writes")
        return path.read_bytes().decode()
    except UnicodeDecodeError:
        raise bad_file(path, "is not text (not UTF-8)") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check that it is readable") from None


def read_json(path: Path, test: Check | None = None) -> Any:
    """A JSON file the report needs, parsed and checked; UserError, naming the file and the field, otherwise."""
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:  # truncated, not JSON, or nested beyond reason
        raise bad_file(path, f"is not valid JSON ({str(e) or type(e).__name__})") from None
    return obj if test is None else check(path, obj, test)


def read_record(path: Path, kind: str, shape: type | None = None) -> dict[str, Any]:
    """A versioned file (schema.FILES[kind]) in the current version's shape (schema.upgrade: an older one upgraded,
    a newer one refused), checked against its schema TypedDict (or `shape`, the part of it the caller reads)."""
    return as_record(path, kind, read_json(path), shape)


def as_record(path: Path, kind: str, obj: Any, shape: type | None = None) -> dict[str, Any]:
    """read_record of a file already parsed (obj: its JSON value, as written)."""
    record = schema.upgrade(kind, obj, path)
    return check(path, record, check_of(shape or schema.FILES[kind]))


def check(path: Path, obj: Any, test: Check) -> Any:
    """obj, where `test` accepts it; else the one-line UserError naming the file and the field."""
    if (p := test(obj)) is not None:
        where, value, what = p
        at = f'"{where}" is ' if where else "is "
        raise bad_file(path, f"holds invalid data: {at}{preview(value)} where {what} was expected")
    return obj


def read_table(path: Path, needs: tuple[str, ...] = ()) -> list[dict[str, float]]:
    """A CSV file of numbers (metrics.csv, steps.csv) as rows of floats, a cell left empty absent from its row;
    the `needs` columns must be filled and finite in every row. UserError, naming the file and line, otherwise."""
    text = _read_text(path)
    try:
        lines = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as e:  # a NUL byte, a field beyond csv's limit
        raise bad_file(path, f"is not a CSV file ({e})") from None
    if not lines:
        return []
    header, rows = lines[0], []
    if missing := [k for k in needs if k not in header]:
        raise bad_file(path, f"has no {', '.join(missing)} column (its header: {preview(','.join(header))})")
    for n, cells in enumerate(lines[1:], 2):
        if len(cells) != len(header):
            raise bad_file(path, f"has {len(cells)} cells in row {n}, where its header has {len(header)}")
        try:
            row = {k: float(v) for k, v in zip(header, cells) if v != ""}
        except ValueError:
            raise bad_file(path, f"holds a cell that is not a number in row {n}") from None
        if any(not math.isfinite(row.get(k, math.nan)) for k in needs):
            raise bad_file(path, f"has no finite {' and '.join(needs)} in row {n}")
        rows.append(row)
    return rows


def check_size(path: Path) -> None:
    """Refuse, before loading it, a tensor file larger than any a study writes (images for figures only)."""
    if Path(path).stat().st_size > MAX_BYTES:
        raise ValueError(f"it is larger than {MAX_BYTES // 2**20} MiB, more than a study writes")


def refuse_link(path: Path) -> None:
    """The report writes its files only inside the study folder it was given: a link where it writes (the
    figures folder, report.md, a figure) could make it overwrite, or delete, files elsewhere."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} is a link to {os.readlink(path)}; the report writes its files only inside the folder "
                        "it was given, never through a link: remove the link and run again")
