"""Tables for the data agents: rows given as JSON objects or as CSV text, checked and typed.

A `Table` guarantees: at most `MAX_ROWS` rows and `MAX_COLUMNS` columns; every row holds every
column, in one order (a key missing from a JSON row reads as None); every cell is a JSON scalar
(None, bool, int, finite float or str). CSV cells are typed: whole numbers become int ("007" stays
text), decimals and scientific notation become float, empty cells become None, the rest is text.

Values are compared by kind: numbers with numbers, text with text, booleans with booleans. `1` and
`True` are different keys, `1` and `1.0` the same. Every error is `InvalidTaskInput` naming the row,
column or line at fault.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.agent import json_type
from actors.errors import InvalidTaskInput

Cell = str | int | float | bool | None
Row = dict[str, Cell]

MAX_ROWS = 100_000
MAX_COLUMNS = 200

_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(
    r"[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")


@dataclass(frozen=True)
class Table:
    """Checked rows with their column order, and where they came from (for error messages)."""

    source: str
    columns: tuple[str, ...]
    rows: list[Row]
    lines: tuple[int, ...] | None = None  # the CSV line each row ended on

    def label(self, index: int) -> str:
        """How error messages name row `index`: `rows[3]`, or `csv row 3 (line 5)`."""
        if self.lines is not None:
            return f"{self.source} row {index} (line {self.lines[index]})"
        return f"{self.source}[{index}]"

    def require_columns(self, names: Iterable[str], used_for: str) -> None:
        for name in names:
            if name not in self.columns:
                raise unknown_column(name, self, used_for)


def unknown_column(name: Any, table: Table, used_for: str) -> InvalidTaskInput:
    available = ", ".join(repr(column) for column in table.columns) or "none"
    return InvalidTaskInput(
        f"unknown column {name!r} in {used_for}; available columns in {table.source}: "
        f"{available}",
        {"column": name, "available": list(table.columns)})


def kind_of(value: Cell) -> str:
    """Which of "null", "boolean", "number" or "text" `value` is; values compare within a kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def cell_key(value: Cell) -> tuple[str, Cell]:
    """A hashable key on which equal values of one kind meet (1 and 1.0; never 1 and True)."""
    return kind_of(value), value


def describe(value: Any) -> str:
    """A value for messages: `the number 5`, `the text 'abc'`, `null`, `a list [1, 2]`."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if not is_scalar(value):
        return f"{json_type(value)} {shown}"
    kind = kind_of(value)
    if kind == "null":
        return "null"
    if kind == "boolean":
        shown = "true" if value else "false"
    return f"the {kind} {shown}"


def is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def type_cell(text: str) -> Cell:
    """A CSV cell as its value: int, float, None for empty, else the text unchanged."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        if _INTEGER.fullmatch(stripped):
            return int(stripped)
        if _DECIMAL.fullmatch(stripped):
            number = float(stripped)
            return number if math.isfinite(number) else text
    except ValueError:  # an integer too long to convert stays text
        return text
    return text


def rows_table(rows: Any, source: str) -> Table:
    """A table from a JSON list of row objects; columns in order of first appearance."""
    if not isinstance(rows, list):
        raise InvalidTaskInput(
            f"payload {source!r} must be a list of row objects, got {json_type(rows)}",
            {"field": source})
    _require_row_count(len(rows), source)
    columns: dict[str, None] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidTaskInput(
                f"{source}[{index}] is {json_type(row)}; each row must be an object mapping column "
                "names to values", {"field": source, "row": index})
        for column, cell in row.items():
            if not isinstance(column, str):
                raise InvalidTaskInput(f"{source}[{index}] has a non-string column name {column!r}",
                                       {"field": source, "row": index})
            if not is_scalar(cell):
                raise InvalidTaskInput(
                    f"{source}[{index}] column {column!r} holds {json_type(cell)}; cells must be "
                    "JSON scalars (a string, a finite number, a boolean or null)",
                    {"field": source, "row": index, "column": column})
            if column not in columns:
                columns[column] = None
                _require_column_count(len(columns), source)
    names = tuple(columns)
    return Table(source, names, [{name: row.get(name) for name in names} for row in rows])


def csv_table(text: Any, source: str) -> Table:
    """A table from CSV text whose first line names the columns; cells typed by `type_cell`.

    The delimiter is a comma, unless the header has none and has tabs or semicolons instead.
    """
    if not isinstance(text, str):
        raise InvalidTaskInput(f"payload {source!r} must be CSV text, got {json_type(text)}",
                               {"field": source})
    if not text.strip():
        raise InvalidTaskInput(
            f"payload {source!r} is empty; it needs a header line naming the columns, then one "
            "line per row", {"field": source})
    header_line = next(line for line in text.splitlines() if line.strip())
    delimiter = ","
    if "," not in header_line:
        delimiter = "\t" if "\t" in header_line else ";" if ";" in header_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
                        skipinitialspace=True)
    rows: list[Row] = []
    lines: list[int] = []
    try:
        header = next((record for record in reader if any(field.strip() for field in record)), None)
        if header is None:
            raise InvalidTaskInput(f"payload {source!r} has no header line naming the columns",
                                   {"field": source})
        columns = _checked_header([name.strip() for name in header], source, reader.line_num)
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip() and len(columns) > 1):
                continue
            if len(record) != len(columns):
                raise InvalidTaskInput(
                    f"{source} line {reader.line_num} has {len(record)} fields but the header has "
                    f"{len(columns)}; quote fields that contain '{delimiter}'",
                    {"field": source, "line": reader.line_num})
            _require_row_count(len(rows) + 1, source)
            rows.append({name: type_cell(cell) for name, cell in zip(columns, record)})
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InvalidTaskInput(
            f"payload {source!r} is not valid CSV at line {reader.line_num}: {exc}",
            {"field": source, "line": reader.line_num}) from exc
    return Table(source, columns, rows, tuple(lines))


def read_table(value: Any, source: str) -> Table:
    """A table from either form: CSV text (a string) or a list of row objects."""
    return csv_table(value, source) if isinstance(value, str) else rows_table(value, source)


def _checked_header(header: list[str], source: str, line: int) -> tuple[str, ...]:
    _require_column_count(len(header), source)
    for position, name in enumerate(header, start=1):
        if not name:
            raise InvalidTaskInput(
                f"{source} header column {position} is empty; every column needs a name",
                {"field": source, "line": line})
    repeated = next((name for name, count in Counter(header).items() if count > 1), None)
    if repeated is not None:
        raise InvalidTaskInput(f"{source} header repeats column {repeated!r}; names must be unique",
                               {"field": source, "column": repeated, "line": line})
    return tuple(header)


def _require_row_count(count: int, source: str) -> None:
    if count > MAX_ROWS:
        raise InvalidTaskInput(f"{source} has more than {MAX_ROWS} rows",
                               {"field": source, "limit": MAX_ROWS})


def _require_column_count(count: int, source: str) -> None:
    if count > MAX_COLUMNS:
        raise InvalidTaskInput(f"{source} has more than {MAX_COLUMNS} columns",
                               {"field": source, "limit": MAX_COLUMNS})


def column_kind(table: Table, column: str, purpose: str) -> str:
    """The one kind of the column's non-null values ("null" if none), or an error naming a row
    whose value is of another kind. `purpose` completes "so it cannot be ...": "sorted"."""
    kind, first = "null", -1
    for index, row in enumerate(table.rows):
        value_kind = kind_of(row[column])
        if value_kind == "null" or value_kind == kind:
            continue
        if kind == "null":
            kind, first = value_kind, index
            continue
        raise InvalidTaskInput(
            f"column {column!r} mixes {kind} and {value_kind} values ({table.label(first)} holds "
            f"{describe(table.rows[first][column])}, {table.label(index)} holds "
            f"{describe(row[column])}), so it cannot be {purpose}",
            {"column": column, "row": index})
    return kind


def sort_rows(rows: Sequence[Row], keys: Sequence[tuple[str, bool]]) -> list[Row]:
    """`rows` stably sorted by `(column, descending)` keys, nulls last in either direction.

    Each key column must hold one kind of value (check with `column_kind`).
    """
    ordered = list(rows)
    for column, descending in reversed(keys):
        present = [row for row in ordered if row[column] is not None]
        present.sort(key=lambda row: row[column], reverse=descending)  # type: ignore
        ordered = present + [row for row in ordered if row[column] is None]
    return ordered


def payload_table(payload: dict[str, Any], used_for: str) -> Table:
    """The one table a payload gives, as 'rows' (objects) or 'csv' (text); `used_for` names
    the operation in the error when there is none, or two."""
    given = [key for key in ("rows", "csv") if key in payload]
    if len(given) != 1:
        problem = "gives both 'rows' and 'csv'; give one table" if given else (
            "needs a table: payload 'rows' (a list of objects) or 'csv' (text whose first line "
            "names the columns)")
        raise InvalidTaskInput(f"{used_for} {problem}", {"field": "rows"})
    if given == ["csv"]:
        return csv_table(payload["csv"], "csv")
    return read_table(payload["rows"], "rows")
