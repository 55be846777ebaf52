"""The `data_processor` agent: summary statistics, filter, sort, group-by, dedupe and join.

A table comes as payload "rows" (a list of objects) or "csv" (text whose first line names the
columns); see `tables` for the checks and typing. The operation is payload "operation", or, when
that is absent, what the payload's parameters and clear words in the description point to
("summary statistics", "sort by price", "remove duplicates", "group by region", "join on id").
Results:

    {"operation": ..., "rows": [...], "row_count": n, "columns": [...], "truncated": bool}
    {"operation": "summary", "row_count": n, "columns": {name: stats}}

`row_count` counts every result row; at most payload "limit" of them are returned (default 10 000,
at most 100 000). Sorting and grouping are stable and put nulls last; values compare only within one
kind (see `tables`), and comparing across kinds is an error naming the row and column.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.agent import Agent, invalid
from actors.agents.tables import (
    MAX_COLUMNS, MAX_ROWS, Cell, Row, Table, cell_key, column_kind, csv_table, describe, is_scalar,
    kind_of, read_table, rows_table, sort_rows)
from actors.agents.operations import OperationChooser
from actors.errors import InvalidTaskInput
from storage.messages import AgentSpec, AgentTask, Resources

OPERATIONS = ("summary", "filter", "sort", "group_by", "dedupe", "join")
FILTER_OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "startswith",
                    "endswith", "is_null", "not_null")
AGGREGATE_FUNCTIONS = ("count", "sum", "mean", "min", "max", "median", "count_distinct", "first",
                       "last")
JOIN_KINDS = ("inner", "left", "right", "outer")
MAX_CONDITIONS = 100
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000

_OPERATION_ALIASES = {
    "describe": "summary", "stats": "summary", "statistics": "summary", "where": "filter",
    "order": "sort", "order_by": "sort", "group": "group_by", "groupby": "group_by",
    "group-by": "group_by", "aggregate": "group_by", "dedup": "dedupe", "deduplicate": "dedupe",
    "distinct": "dedupe", "merge": "join",
}
_OPERATOR_ALIASES = {
    "=": "==", "eq": "==", "ne": "!=", "<>": "!=", "gt": ">", "ge": ">=", "gte": ">=", "lt": "<",
    "le": "<=", "lte": "<=", "not in": "not_in", "is null": "is_null", "is not null": "not_null",
    "starts_with": "startswith", "ends_with": "endswith",
}
_FUNCTION_ALIASES = {"avg": "mean", "average": "mean", "total": "sum", "nunique": "count_distinct",
                     "distinct": "count_distinct"}
_ORDERED = (">", ">=", "<", "<=")
_TEXT_MATCHES = ("contains", "startswith", "endswith")

_DESCRIBED = {operation: re.compile(pattern, re.IGNORECASE) for operation, pattern in {
    "summary": r"\bsummar(?:y|ies|i[sz]e)\b|\bdescribe\b|\bstatistics\b|\bstats\b|\bprofile\b"
               r"|\bmissing values\b|\b(?:each|every|per) column\b",
    "filter": r"\bfilter\w*|\bwhere\b|\bonly (?:the )?(?:rows|records|entries)\b"
              r"|\bkeep (?:only )?(?:the )?(?:rows|records|entries)\b",
    "sort": r"\bsort\w*|\border(?:ed)?\s+(?:\w+\s+)?by\b|\brank\w*|\bascending\b|\bdescending\b"
            r"|\b(?:highest|lowest|largest|smallest|newest|oldest) first\b",
    "group_by": r"\bgroup\w*|\baggregat\w*|\bper (?:each )?(?!column\b|row\b)\w+|\bfor each\b"
                r"|\beach (?!column\b|row\b)\w+|\bbreak\s*-?\s*down\b|\bsubtotals?\b",
    "dedupe": r"\bde-?dup\w*|\bduplicat\w*|\brepeated\b"
              r"|\b(?:unique|distinct) (?:rows|records|entries)\b",
    "join": r"\bjoin\w*|\bmerge\w*|\blook\s*-?\s*up\b|\bcombine\b",
}.items()}
# Payload keys that only one operation reads ("by" is read by two, so it decides nothing).
_HINTED_BY = {
    "summary": ("columns",), "filter": ("where", "any"), "sort": ("descending",),
    "group_by": ("aggregates",), "dedupe": ("subset", "keep"),
    "join": ("on", "left_on", "right_on", "how", "left", "right", "right_rows", "right_csv"),
}
_JOIN_KIND = re.compile(r"\b(inner|left|right|outer|full)\s+(?:outer\s+)?join", re.IGNORECASE)
_DESCENDING = re.compile(r"\b(?:desc|descending|decreasing|reversed?|(?:highest|largest|biggest|"
                         r"most|newest|latest) first)\b", re.IGNORECASE)


OPERATION_CHOOSER = OperationChooser(OPERATIONS, _OPERATION_ALIASES, _DESCRIBED, _HINTED_BY)


def input_table(payload: dict[str, Any]) -> Table:
    """The table in payload "rows" or "csv" (exactly one of them)."""
    given = [key for key in ("rows", "csv") if key in payload]
    if len(given) == 2:
        raise invalid("payload gives both 'rows' and 'csv'; give one table", field="rows")
    if not given:
        raise invalid("no table given: pass payload 'rows' (a list of objects) or 'csv' (text "
                      "whose first line names the columns)", field="rows")
    if given[0] == "rows":
        return rows_table(payload["rows"], "rows")
    return csv_table(payload["csv"], "csv")


def _names(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if (not isinstance(names, list) or not names
            or not all(isinstance(name, str) and name for name in names)):
        raise invalid(f"payload {key!r} must be a column name or a non-empty list of column "
                      f"names, got {describe(value)}", field=key)
    _require_at_most(len(names), MAX_COLUMNS, key)
    return names


def _require_at_most(count: int, limit: int, key: str) -> None:
    if count > limit:
        raise invalid(f"payload {key!r} has {count} entries; at most {limit}", field=key,
                      limit=limit)


def _columns(payload: dict[str, Any], key: str, table: Table) -> list[str] | None:
    """The column names in payload `key` (checked against `table`), or None if it is absent."""
    if payload.get(key) is None:
        return None
    names = _names(payload[key], key)
    table.require_columns(names, f"payload {key!r}")
    return names


def _column_after(word: str, description: str, columns: Sequence[str]) -> list[str]:
    """The column the description names right after `word` ("sort by price"), if any."""
    for name in sorted(columns, key=len, reverse=True):
        if re.search(rf"\b{word}\s+(?:the\s+)?{re.escape(name)}(?!\w)", description,
                     re.IGNORECASE):
            return [name]
    return []


def _flag(payload: dict[str, Any], key: str, default: bool = False) -> bool:
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise invalid(f"payload {key!r} must be true or false, got {describe(value)}", field=key)
    return value


def _limit(payload: dict[str, Any]) -> int:
    limit = payload.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise invalid(f"payload 'limit' must be a whole number from 0 to {MAX_LIMIT}, got "
                      f"{describe(limit)}", field="limit")
    return limit


def _rows_result(operation: str, columns: Sequence[str], rows: list[Row], limit: int,
                 **extra: Any) -> dict[str, Any]:
    return {"operation": operation, "rows": rows[:limit], "row_count": len(rows),
            "columns": list(columns), "truncated": len(rows) > limit, **extra}


def _median(ordered: Sequence[int | float]) -> int | float:
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _total(numbers: Sequence[int | float]) -> int | float:
    return sum(numbers) if all(isinstance(n, int) for n in numbers) else math.fsum(numbers)


def _number_statistics(numbers: list[int | float], column: str) -> dict[str, Any]:
    ordered = sorted(numbers)
    try:
        mean = math.fsum(ordered) / len(ordered)
        squares = math.fsum((number - mean) ** 2 for number in ordered)
    except OverflowError as exc:
        raise invalid(f"column {column!r} holds numbers too large to summarise",
                      column=column) from exc
    return {"min": ordered[0], "max": ordered[-1], "mean": mean, "median": _median(ordered),
            "stdev": math.sqrt(squares / (len(ordered) - 1)) if len(ordered) > 1 else None,
            "sum": _total(ordered)}


def _column_summary(values: list[Cell], column: str) -> dict[str, Any]:
    present = [value for value in values if value is not None]
    kinds = {kind_of(value) for value in present}
    kind = "empty" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
    stats: dict[str, Any] = {"type": kind, "count": len(present),
                             "missing": len(values) - len(present),
                             "unique": len({cell_key(value) for value in present})}
    if kind == "number":
        stats.update(_number_statistics(present, column))  # type: ignore[arg-type]
    elif present:
        (_, top), freq = Counter(cell_key(value) for value in present).most_common(1)[0]
        stats.update(top=top, freq=freq)
    return stats


def summarize(table: Table, payload: dict[str, Any]) -> dict[str, Any]:
    """Per column: count, missing and unique; for numbers also min, max, mean, median, (sample)
    stdev and sum; for other values the most frequent one, `top`, and its `freq`."""
    columns = _columns(payload, "columns", table) or table.columns
    return {"operation": "summary", "row_count": len(table.rows),
            "columns": {name: _column_summary([row[name] for row in table.rows], name)
                        for name in columns}}


@dataclass(frozen=True)
class Condition:
    """One checked filter condition: `column op value`."""

    index: int
    column: str
    operator: str
    value: Any
    choices: frozenset[tuple[str, Cell]] = frozenset()

    def holds(self, cell: Cell, table: Table, row: int) -> bool:
        operator = self.operator
        if operator in ("is_null", "not_null"):
            return (cell is None) == (operator == "is_null")
        if operator in ("in", "not_in"):
            kinds = {kind for kind, _ in self.choices} - {"null"}
            if cell is not None and kinds and kind_of(cell) not in kinds:
                raise self._mismatch(cell, table, row)
            return (cell_key(cell) in self.choices) == (operator == "in")
        if operator in ("==", "!="):
            if cell is not None and self.value is not None and kind_of(cell) != kind_of(self.value):
                raise self._mismatch(cell, table, row)
            return (cell_key(cell) == cell_key(self.value)) == (operator == "==")
        if cell is None:
            return False
        if kind_of(cell) != kind_of(self.value):
            raise self._mismatch(cell, table, row)
        return _COMPARE[operator](cell, self.value)

    def _mismatch(self, cell: Cell, table: Table, row: int) -> InvalidTaskInput:
        return invalid(
            f"filter condition {self.index}: {table.label(row)} column {self.column!r} holds "
            f"{describe(cell)}, which cannot be compared with {describe(self.value)} using "
            f"{self.operator!r}", row=row, column=self.column, condition=self.index)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda cell, value: cell > value, ">=": lambda cell, value: cell >= value,
    "<": lambda cell, value: cell < value, "<=": lambda cell, value: cell <= value,
    "contains": lambda cell, value: value in cell, "startswith": str.startswith,
    "endswith": str.endswith,
}


def _condition(index: int, spec: Any, table: Table) -> Condition:
    where = f"filter condition {index}"
    if not isinstance(spec, dict) or not isinstance(spec.get("column"), str):
        raise invalid(f"{where} must be an object with a 'column', an 'op' and a 'value', like "
                      '{"column": "price", "op": ">", "value": 10}', condition=index)
    column = spec["column"]
    table.require_columns([column], where)
    operator = spec.get("op", "==")
    if isinstance(operator, str):
        operator = _OPERATOR_ALIASES.get(operator.strip().lower(), operator.strip().lower())
    if operator not in FILTER_OPERATORS:
        raise invalid(f"{where} has unknown op {operator!r}; accepted: "
                      f"{', '.join(FILTER_OPERATORS)}", condition=index,
                      accepted=list(FILTER_OPERATORS))
    if operator in ("is_null", "not_null"):
        return Condition(index, column, operator, None)
    if "value" not in spec:
        raise invalid(f"{where} ({column!r} {operator}) needs a 'value'", condition=index)
    value = spec["value"]
    if operator in ("in", "not_in"):
        if not isinstance(value, list) or not all(is_scalar(item) for item in value):
            raise invalid(f"{where} ({operator}) needs 'value' to be a list of scalars, got "
                          f"{describe(value)}", condition=index)
        return Condition(index, column, operator, value, frozenset(cell_key(v) for v in value))
    if operator in _TEXT_MATCHES and not isinstance(value, str):
        raise invalid(f"{where} ({operator}) needs a text 'value', got {describe(value)}",
                      condition=index)
    if not is_scalar(value) or (operator in _ORDERED and value is None):
        raise invalid(f"{where} ({operator}) cannot compare with {describe(value)}; use a "
                      "string, number or boolean", condition=index)
    return Condition(index, column, operator, value)


def filter_rows(table: Table, payload: dict[str, Any], limit: int) -> dict[str, Any]:
    """The rows meeting every condition in "where" (or any of them, with "any": true)."""
    where = payload.get("where")
    if where is None:
        raise invalid("filter needs payload 'where': a list of conditions like "
                      '{"column": "price", "op": ">", "value": 10}', field="where")
    specs = [where] if isinstance(where, dict) else where
    if not isinstance(specs, list) or not specs:
        raise invalid("payload 'where' must be a non-empty list of conditions", field="where")
    _require_at_most(len(specs), MAX_CONDITIONS, "where")
    conditions = [_condition(index, spec, table) for index, spec in enumerate(specs)]
    combine = any if _flag(payload, "any") else all
    rows = [row for index, row in enumerate(table.rows)
            if combine(c.holds(row[c.column], table, index) for c in conditions)]
    return _rows_result("filter", table.columns, rows, limit)


def _sort_keys(by: Any, table: Table, descending: bool) -> list[tuple[str, bool]]:
    items = by if isinstance(by, list) else [by]
    _require_at_most(len(items), MAX_COLUMNS, "by")
    keys: list[tuple[str, bool]] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("column"), str):
            column = item["column"]
            direction = _flag(item, "descending", descending)
        elif isinstance(item, str) and item.startswith("-") and item not in table.columns:
            column, direction = item[1:], True
        elif isinstance(item, str):
            column, direction = item, descending
        else:
            raise invalid("each entry of payload 'by' must be a column name, '-name' for "
                          'descending, or {"column": name, "descending": true}', field="by")
        table.require_columns([column], "payload 'by'")
        keys.append((column, direction))
    if not keys:
        raise invalid("payload 'by' names no column", field="by")
    return keys


def sort_table(table: Table, payload: dict[str, Any], limit: int, description: str = ""
               ) -> dict[str, Any]:
    """The rows ordered by "by" (stable; nulls last in either direction)."""
    by = payload.get("by")
    descending = _flag(payload, "descending")
    if by is None:
        by = _column_after("by", description, table.columns)
        descending = descending or bool(_DESCENDING.search(description))
        if not by:
            raise invalid("sort needs payload 'by': a column name, '-name' for descending, or a "
                          "list of them", field="by")
    keys = _sort_keys(by, table, descending)
    for column, _ in keys:
        column_kind(table, column, "sorted")
    return _rows_result("sort", table.columns, sort_rows(table.rows, keys), limit)


@dataclass(frozen=True)
class Aggregate:
    """One output column of a group: `function` over `column` (None: count the group's rows)."""

    name: str
    function: str
    column: str | None

    def over(self, table: Table, indices: list[int]) -> Any:
        if self.column is None:
            return len(indices)
        column = self.column
        present = [(index, table.rows[index][column]) for index in indices
                   if table.rows[index][column] is not None]
        values = [value for _, value in present]
        function = self.function
        if function == "count":
            return len(values)
        if function == "count_distinct":
            return len({cell_key(value) for value in values})
        if function in ("first", "last"):
            return (values[0] if function == "first" else values[-1]) if values else None
        if function in ("min", "max"):
            self._require_kind(present, kind_of(values[0]) if values else "null", table)
            return (min if function == "min" else max)(values) if values else None  # type: ignore
        self._require_kind(present, "number", table)
        numbers: list[int | float] = values  # type: ignore[assignment]
        if function == "sum":
            return _total(numbers)
        if not numbers:
            return None
        if function == "mean":
            return math.fsum(numbers) / len(numbers)
        return _median(sorted(numbers))

    def _require_kind(self, present: list[tuple[int, Cell]], kind: str, table: Table) -> None:
        for index, value in present:
            if kind_of(value) != kind:
                raise invalid(
                    f"aggregate {self.name!r} ({self.function} of {self.column!r}) needs {kind} "
                    f"values, but {table.label(index)} holds {describe(value)}",
                    column=self.column, row=index)


def _aggregate(name: Any, function: Any, column: Any, table: Table) -> Aggregate:
    where = f"aggregate {name!r}"
    if not isinstance(name, str) or not name:
        raise invalid(f"{where} needs a name", field="aggregates")
    function = function.strip().lower() if isinstance(function, str) else function
    function = _FUNCTION_ALIASES.get(function, function)
    if function not in AGGREGATE_FUNCTIONS:
        raise invalid(f"{where} has unknown fn {function!r}; accepted: "
                      f"{', '.join(AGGREGATE_FUNCTIONS)}", field="aggregates",
                      accepted=list(AGGREGATE_FUNCTIONS))
    if column is None and function != "count":
        raise invalid(f"{where} ({function}) needs a 'column'", field="aggregates")
    if column is not None:
        if not isinstance(column, str):
            raise invalid(f"{where} has a non-text 'column' {describe(column)}",
                          field="aggregates")
        table.require_columns([column], where)
    return Aggregate(name, function, column)


def _aggregates(spec: Any, table: Table) -> list[Aggregate]:
    """Aggregates from {"out": {"column", "fn"}}, {"price": "sum"}, {"price": ["sum", "mean"]},
    or a list of {"column", "fn", "name"}; by default one "count" of rows."""
    if spec is None:
        return [Aggregate("count", "count", None)]
    if isinstance(spec, list) and spec and all(isinstance(item, dict) for item in spec):
        pairs = [(item.get("name") or "_".join(
            str(part) for part in (item.get("column"), item.get("fn")) if part), item)
            for item in spec]
    elif isinstance(spec, dict) and spec:
        pairs = list(spec.items())
    else:
        raise invalid("payload 'aggregates' must map output names to "
                      '{"column": ..., "fn": ...} (or a column to a function name, like '
                      '{"price": "sum"})', field="aggregates")
    aggregates: list[Aggregate] = []
    for name, item in pairs:
        if isinstance(item, str):
            counts_rows = item.strip().lower() == "count" and name not in table.columns
            column = None if counts_rows else name
            aggregates.append(_aggregate(name, item, column, table))
        elif isinstance(item, list):
            aggregates.extend(_aggregate(f"{name}_{fn}", fn, name, table) for fn in item)
        elif isinstance(item, dict):
            aggregates.append(_aggregate(name, item.get("fn"), item.get("column"), table))
        else:
            raise invalid(f"aggregate {name!r} must be a function name or an object with "
                          f"'column' and 'fn', got {describe(item)}", field="aggregates")
    _require_at_most(len(aggregates), MAX_COLUMNS, "aggregates")
    counts = Counter(aggregate.name for aggregate in aggregates)
    repeated = next((name for name, count in counts.items() if count > 1), None)
    if repeated is not None:
        raise invalid(f"aggregate name {repeated!r} is used twice", field="aggregates")
    return aggregates


def group_rows(table: Table, payload: dict[str, Any], limit: int, description: str = ""
               ) -> dict[str, Any]:
    """One row per distinct value of the "by" columns, with its aggregates; sorted by group."""
    by = _columns(payload, "by", table) or _column_after("by", description, table.columns)
    if not by:
        raise invalid("group_by needs payload 'by': the column or columns to group on",
                      field="by")
    for column in by:
        column_kind(table, column, "grouped")
    aggregates = _aggregates(payload.get("aggregates"), table)
    clash = next((a.name for a in aggregates if a.name in by), None)
    if clash is not None:
        raise invalid(f"aggregate name {clash!r} is also a group column; name it differently",
                      field="aggregates")
    groups: dict[tuple[tuple[str, Cell], ...], list[int]] = {}
    for index, row in enumerate(table.rows):
        groups.setdefault(tuple(cell_key(row[column]) for column in by), []).append(index)
    rows = []
    for indices in groups.values():
        record: Row = {column: table.rows[indices[0]][column] for column in by}
        record.update({a.name: a.over(table, indices) for a in aggregates})
        rows.append(record)
    rows = sort_rows(rows, [(column, False) for column in by])
    columns = [*by, *(a.name for a in aggregates)]
    return _rows_result("group_by", columns, rows, limit, group_count=len(rows))


def dedupe_rows(table: Table, payload: dict[str, Any], limit: int, description: str = ""
                ) -> dict[str, Any]:
    """The rows without repeats of the "subset" columns (all columns by default), keeping the first
    (or, with "keep": "last", the last) of each; in their original order."""
    subset = _columns(payload, "subset", table) or _column_after("by", description, table.columns)
    subset = subset or list(table.columns)
    keep = payload.get("keep", "first")
    if keep not in ("first", "last"):
        raise invalid(f"payload 'keep' must be \"first\" or \"last\", got {describe(keep)}",
                      field="keep")
    order = range(len(table.rows)) if keep == "first" else range(len(table.rows) - 1, -1, -1)
    seen: set[tuple[tuple[str, Cell], ...]] = set()
    kept: list[int] = []
    for index in order:
        key = tuple(cell_key(table.rows[index][column]) for column in subset)
        if key not in seen:
            seen.add(key)
            kept.append(index)
    kept.sort()
    rows = [table.rows[index] for index in kept]
    return _rows_result("dedupe", table.columns, rows, limit,
                        removed=len(table.rows) - len(rows), subset=subset)


_LEFT_SOURCES = ("left", "left_rows", "left_csv", "rows", "csv")
_RIGHT_SOURCES = ("right", "right_rows", "right_csv")


def _join_side(payload: dict[str, Any], sources: Sequence[str], side: str) -> Table:
    given = [key for key in sources if key in payload]
    if len(given) != 1:
        problem = "needs" if not given else f"got several {side} tables ({', '.join(given)}); give"
        raise invalid(f"join {problem} one {side} table: payload "
                      f"{' or '.join(repr(key) for key in sources)}", field=side)
    key = given[0]
    if key.endswith("rows"):
        return rows_table(payload[key], key)
    if key.endswith("csv"):
        return csv_table(payload[key], key)
    return read_table(payload[key], key)


def _join_keys(payload: dict[str, Any], left: Table, right: Table, description: str
               ) -> tuple[list[str], list[str]]:
    if "on" in payload:
        if "left_on" in payload or "right_on" in payload:
            raise invalid("give payload 'on', or 'left_on' with 'right_on', not both", field="on")
        left_on = right_on = _names(payload["on"], "on")
    elif "left_on" in payload or "right_on" in payload:
        left_on = _names(payload.get("left_on"), "left_on")
        right_on = _names(payload.get("right_on"), "right_on")
        if len(left_on) != len(right_on):
            raise invalid(f"payload 'left_on' names {len(left_on)} columns but 'right_on' names "
                          f"{len(right_on)}; they pair up one to one", field="left_on")
    else:
        shared = [column for column in left.columns if column in right.columns]
        if len(shared) > 1:
            shared = _column_after("on", description, shared) or shared
        if len(shared) != 1:
            found = f"both tables have {', '.join(map(repr, shared))}" if shared else (
                "the tables share no column name")
            raise invalid(f"join needs payload 'on' naming the key column(s) ({found}), or "
                          "'left_on' and 'right_on'", field="on")
        left_on = right_on = shared
    left.require_columns(left_on, "the left join key")
    right.require_columns(right_on, "the right join key")
    for left_key, right_key in zip(left_on, right_on):
        kinds = (column_kind(left, left_key, "joined"), column_kind(right, right_key, "joined"))
        if "null" not in kinds and kinds[0] != kinds[1]:
            raise invalid(f"join key {left_key!r} holds {kinds[0]} values on the left but "
                          f"{right_key!r} holds {kinds[1]} values on the right; they never match",
                          column=left_key)
    return left_on, right_on


def join_tables(payload: dict[str, Any], limit: int, description: str = "") -> dict[str, Any]:
    """Rows of the left and right tables paired on equal keys (nulls never match).

    Rows come in left order, each with its matches in right order; for "right" and "outer" joins
    the unmatched right rows follow. A key column named the same on both sides appears once; any
    other name on both sides gets "_left" / "_right". Without "how", a "left join" (and so on) in
    the description decides; without "on", the one column both tables have, or the one of them
    the description names after "on".
    """
    left = _join_side(payload, _LEFT_SOURCES, "left")
    right = _join_side(payload, _RIGHT_SOURCES, "right")
    described = _JOIN_KIND.search(description)
    default = described.group(1).lower().replace("full", "outer") if described else "inner"
    how = payload.get("how", default)
    if how not in JOIN_KINDS:
        raise invalid(f"payload 'how' must be one of {', '.join(JOIN_KINDS)}, got "
                      f"{describe(how)}", field="how")
    left_on, right_on = _join_keys(payload, left, right, description)
    merged = [left_key for left_key, right_key in zip(left_on, right_on) if left_key == right_key]
    right_kept = [column for column in right.columns if column not in merged]
    clashes = set(left.columns) & set(right_kept)
    left_names = {c: f"{c}_left" if c in clashes else c for c in left.columns}
    right_names = {c: f"{c}_right" if c in clashes else c for c in right_kept}
    columns = [*left_names.values(), *right_names.values()]
    if len(set(columns)) != len(columns):
        raise invalid("the joined table's column names collide even after adding _left/_right; "
                      "rename the clashing columns first", field="on")
    if len(columns) > MAX_COLUMNS:
        raise invalid(f"the joined table would have {len(columns)} columns; at most "
                      f"{MAX_COLUMNS}", field="on", limit=MAX_COLUMNS)

    def joined(left_row: Row | None, right_row: Row | None) -> Row:
        row = {left_names[c]: None if left_row is None else left_row[c] for c in left.columns}
        if left_row is None and right_row is not None:
            row.update({column: right_row[column] for column in merged})
        row.update({right_names[c]: None if right_row is None else right_row[c]
                    for c in right_kept})
        return row

    def key(row: Row, on: list[str]) -> tuple[tuple[str, Cell], ...] | None:
        return None if any(row[c] is None for c in on) else tuple(cell_key(row[c]) for c in on)

    right_index: dict[tuple[tuple[str, Cell], ...], list[int]] = {}
    for index, row in enumerate(right.rows):
        right_key = key(row, right_on)
        if right_key is not None:
            right_index.setdefault(right_key, []).append(index)
    rows: list[Row] = []
    matched: set[int] = set()
    for left_row in left.rows:
        left_key = key(left_row, left_on)
        matches = right_index.get(left_key, []) if left_key is not None else []
        rows.extend(joined(left_row, right.rows[index]) for index in matches)
        matched.update(matches)
        if not matches and how in ("left", "outer"):
            rows.append(joined(left_row, None))
        _require_join_size(len(rows))
    if how in ("right", "outer"):
        rows.extend(joined(None, row) for index, row in enumerate(right.rows)
                    if index not in matched)
        _require_join_size(len(rows))
    return _rows_result("join", columns, rows, limit, how=how, left_on=left_on, right_on=right_on)


def _require_join_size(count: int) -> None:
    if count > MAX_ROWS:
        raise invalid(f"the join produces more than {MAX_ROWS} rows; join on a more specific "
                      "key", field="on", limit=MAX_ROWS)


def process(payload: dict[str, Any], description: str = "") -> dict[str, Any]:
    """Run the task's operation on its table(s): the agent's work, without the async shell."""
    operation = OPERATION_CHOOSER.choose(payload, description)
    limit = _limit(payload)
    if operation == "join":
        return join_tables(payload, limit, description)
    table = input_table(payload)
    if operation == "summary":
        return summarize(table, payload)
    if operation == "filter":
        return filter_rows(table, payload, limit)
    if operation == "sort":
        return sort_table(table, payload, limit, description)
    if operation == "group_by":
        return group_rows(table, payload, limit, description)
    return dedupe_rows(table, payload, limit, description)


class DataProcessor(Agent):
    """Summary statistics, filtering, sorting, grouping, deduplication and joins over tables."""

    spec = AgentSpec(
        name="data_processor",
        description="Works on tabular data given as JSON rows or CSV text: summary statistics per "
        "column, filtering rows by conditions, sorting, group-by with aggregates, removing "
        "duplicates, and joining two tables on key columns.",
        capabilities=(
            "summary statistics for each column of a table",
            "filter rows by conditions on column values",
            "sort rows by one or more columns",
            "group rows and aggregate with count, sum, mean, min, max, median",
            "remove duplicate rows",
            "join or merge two tables on key columns",
            "read CSV text or JSON rows",
            "top or bottom N rows by a column",
            "count rows per category, per date or per group",
            "distinct values, missing values and ranges of each column",
        ),
        examples=(
            "Give me summary statistics for this CSV",
            "Describe each column of the sales table",
            "Profile this dataset: missing values, unique counts, min and max",
            "Sort the rows by price, highest first",
            "Order customers by signup date",
            "Rank employees by salary",
            "Remove duplicate rows from this list",
            "Dedupe the contacts by email",
            "Drop repeated entries, keeping the last occurrence",
            "Group the orders by region and sum the revenue",
            "Total sales per country",
            "Count how many orders each customer placed",
            "Filter rows where age is over 30",
            "Show only the records with status active",
            "Keep only rows where the country is Norway",
            "Join orders with customers on customer_id",
            "Merge these two tables on the id column",
            "Left join the users table onto the orders",
            "Break down revenue by month",
            "Compute the mean, median and standard deviation of every column",
            "show rows where the status is not cancelled",
            "filter to customers from Germany or France",
            "sort the products alphabetically by name",
            "order the results by date, newest first",
            "rank the regions by revenue and show the top 3",
            "sort the transactions by amount, largest first",
            "sort the table by city, then by name",
            "count rows per category",
            "number of tickets per support agent",
            "average price per category",
            "group by product and month and sum the quantity",
            "median delivery time per courier",
            "total spend per customer",
            "headcount per department",
            "highest reading per sensor",
            "break down sign-ups by country",
            "remove exact duplicate rows from this CSV",
            "deduplicate the customer list on email, keeping the first",
            "combine the orders and returns tables on order_id",
            "look up the product name of every order line in the products table",
            "summary statistics of the numeric columns",
            "describe this data: count, mean, min and max",
            "how many distinct values are in each column?",
            "profile this spreadsheet",
            "filter for rows with a price above 100",
            "only the rows with orders placed after 2024-01-01",
            "rows where the name contains smith",
            "rows where the balance is negative",
            "average departure delay per airline from this flights table",
            "average length of stay per hospital department",
            "sort the students by GPA and show the top ten",
            "average salary per job level in the HR export",
            "total weight shipped per warehouse",
            "filter the inventory to products with fewer than 10 in stock",
            "join the transactions to the accounts table on account_id",
            "remove duplicate sensor readings with the same device and timestamp",
            "count page views per URL in this log export",
            "average satisfaction score per region from the survey results",
            "median house price per neighbourhood",
            "filter the loans to those over 50,000 with a term of 60 months",
            "average conversion per campaign from the leads table",
            "summary statistics of the ticket resolution times",
            "describe each column of the weather data",
            "sort the films by average rating, best first",
            "revenue per store per quarter",
            "most ordered dish per restaurant",
            "compute the average of one column for each value of another",
            "break down the results by category and compute the totals",
            "rows where the amount is greater than 1000",
            "only the entries whose description contains the word refund",
            "filter to records dated between March and June",
            "filter out the rows with an empty value in the notes column",
            "sort by score and keep the top 5 rows",
            "which group has the highest average?",
            "min and max of every column",
            "show the 10 most recent orders, newest first",
            "how many rows per status?",
            "keep only the rows from EU countries",
            "merge the two CSVs on the email column",
            "drop duplicates from the sign-ups list",
            "summarise each column: type, missing values, min and max",
            "average, min and max delay grouped by airline",
            "filter the table to rows where the country is not empty",
        ),
        resources=Resources(num_cpus=0.25),
        concurrency=8,
        replicas=2,
        payload_hint={"operation": "group_by",
                      "rows": [{"region": "north", "revenue": 120.5},
                               {"region": "south", "revenue": 80.0},
                               {"region": "north", "revenue": 42.0}],
                      "by": ["region"], "aggregates": {"revenue": "sum"}},
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        # Up to 100 000 rows is real CPU work: a thread keeps the replica's event loop answering.
        return await asyncio.to_thread(process, task.payload, task.description or "")
