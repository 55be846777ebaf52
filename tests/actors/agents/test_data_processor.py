"""The data_processor agent and its tables: every operation on real rows, errors that point."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents import BUILTIN_AGENTS
from actors.agents.data_processor import DataProcessor
from actors.agents.tables import csv_table, type_cell
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask

ORDERS = [
    {"id": 1, "customer": "ana", "city": "Oslo", "price": 30, "status": "paid"},
    {"id": 2, "customer": "ben", "city": "Bergen", "price": 12.5, "status": "open"},
    {"id": 3, "customer": "ana", "city": "Oslo", "price": None, "status": "paid"},
    {"id": 4, "customer": "cai", "city": "Tromsø", "price": 7, "status": "refunded"},
    {"id": 5, "customer": "ben", "city": "Bergen", "price": 20, "status": "paid"},
]


def process(payload: dict[str, Any], description: str = "") -> Any:
    task = AgentTask(task_id="t", attempt=1, agent_type="data_processor", description=description,
                     payload=payload, timeout_s=10)
    result = asyncio.run(DataProcessor().run(task))
    json.dumps(result, allow_nan=False)  # every result is plain JSON
    return result


def refusal(payload: dict[str, Any], description: str = "") -> str:
    with pytest.raises(InvalidTaskInput) as caught:
        process(payload, description)
    return str(caught.value)


def ids(result: dict[str, Any]) -> list[Any]:
    return [row["id"] for row in result["rows"]]


def test_spec_declares_what_the_router_learns_from():
    spec = DataProcessor.spec
    assert spec.name == "data_processor"
    assert BUILTIN_AGENTS["data_processor"] is DataProcessor and issubclass(DataProcessor, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.25 and spec.concurrency == 8


# --------------------------------------------------------------------------------------- tables

@pytest.mark.parametrize("text, expected", [
    ("42", 42), ("-7", -7), ("+3", 3), ("2.50", 2.5), ("1e3", 1000.0), (".5", 0.5), ("", None),
    ("  ", None), ("007", "007"), ("Oslo", "Oslo"), ("nan", "nan"), ("inf", "inf"), ("1,5", "1,5"),
])
def test_csv_cells_are_typed(text, expected):
    value = type_cell(text)
    assert value == expected and type(value) is type(expected)


def test_csv_text_becomes_rows():
    table = csv_table('id,name,price,code\n1,"Widget, large",2.50,007\n\n2,,3,\n', "csv")
    assert table.columns == ("id", "name", "price", "code")
    assert table.rows == [{"id": 1, "name": "Widget, large", "price": 2.5, "code": "007"},
                          {"id": 2, "name": None, "price": 3, "code": None}]


def test_semicolon_and_tab_separated_text_is_read():
    assert csv_table("a;b\n1;x\n", "csv").rows == [{"a": 1, "b": "x"}]
    assert csv_table("a\tb\n1\tx\n", "csv").rows == [{"a": 1, "b": "x"}]


@pytest.mark.parametrize("text, fragment", [
    ("a,b\n1,2\n3,4,5\n", "csv line 3 has 3 fields but the header has 2"),
    ('a,b\n1,"unterminated\n', "is not valid CSV"),
    ("a,a\n1,2\n", "header repeats column 'a'"),
    ("a,,c\n1,2,3\n", "header column 2 is empty"),
    ("   \n", "payload 'csv' is empty"),
])
def test_bad_csv_is_refused_with_the_line(text, fragment):
    assert fragment in refusal({"operation": "summary", "csv": text})


def test_rows_missing_a_key_read_it_as_null():
    result = process({"operation": "sort", "by": "a", "rows": [{"a": 2, "b": "x"}, {"a": 1}]})
    assert result["rows"] == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


@pytest.mark.parametrize("rows, fragment", [
    ([{"a": 1}, {"a": 2, "tags": ["x", "y"]}], "rows[1] column 'tags' holds a list"),
    ([{"a": {"nested": 1}}], "rows[0] column 'a' holds an object"),
    ([{"a": 1}, [1, 2]], "rows[1] is a list; each row must be an object"),
    ("a,b\n1,2", "payload 'rows' must be a list of row objects"),
])
def test_rows_must_be_objects_of_scalars(rows, fragment):
    assert fragment in refusal({"operation": "summary", "rows": rows})


def test_table_size_limits():
    assert "more than 100000 rows" in refusal({"operation": "summary", "rows": [{}] * 100_001})
    wide = {f"c{index}": index for index in range(201)}
    assert "more than 200 columns" in refusal({"operation": "summary", "rows": [wide]})


def test_a_table_is_required_and_only_one():
    assert "no table given" in refusal({"operation": "summary"})
    assert "both 'rows' and 'csv'" in refusal({"operation": "summary", "rows": [], "csv": "a\n1"})


# -------------------------------------------------------------------------------------- summary

def test_summary_statistics_per_column():
    result = process({"operation": "summary", "rows": ORDERS})
    assert result["operation"] == "summary" and result["row_count"] == 5
    price = result["columns"]["price"]
    # 30, 12.5, 7, 20: sum 69.5, mean 17.375, median (12.5 + 20) / 2, sample stdev by hand.
    exact = ("type", "count", "missing", "unique", "min", "max", "sum")
    assert {key: price[key] for key in exact} == {
        "type": "number", "count": 4, "missing": 1, "unique": 4, "min": 7, "max": 30, "sum": 69.5}
    assert price["mean"] == pytest.approx(17.375)
    assert price["median"] == pytest.approx(16.25)
    deviations = (30 - 17.375, 12.5 - 17.375, 7 - 17.375, 20 - 17.375)
    assert price["stdev"] == pytest.approx((sum(d * d for d in deviations) / 3) ** 0.5)
    assert result["columns"]["city"] == {"type": "text", "count": 5, "missing": 0, "unique": 3,
                                         "top": "Oslo", "freq": 2}
    assert result["columns"]["status"]["top"] == "paid" and result["columns"]["status"]["freq"] == 3


def test_summary_of_chosen_columns_from_csv():
    result = process({"csv": "x,y\n1,a\n3,a\n,b\n"}, "Give me summary statistics for this CSV")
    assert list(result["columns"]) == ["x", "y"]
    assert result["columns"]["x"]["mean"] == 2.0 and result["columns"]["x"]["missing"] == 1
    only = process({"operation": "describe", "rows": ORDERS, "columns": ["city"]})
    assert list(only["columns"]) == ["city"]


def test_unknown_column_is_named_with_the_available_ones():
    message = refusal({"operation": "summary", "rows": ORDERS, "columns": ["cost"]})
    assert "unknown column 'cost'" in message and "'price'" in message and "'city'" in message


# --------------------------------------------------------------------------------------- filter

@pytest.mark.parametrize("condition, expected_ids", [
    ({"column": "price", "op": ">", "value": 12.5}, [1, 5]),
    ({"column": "price", "op": ">=", "value": 12.5}, [1, 2, 5]),
    ({"column": "price", "op": "<", "value": 12.5}, [4]),
    ({"column": "price", "op": "<=", "value": 7}, [4]),
    ({"column": "city", "op": "==", "value": "Oslo"}, [1, 3]),
    ({"column": "city", "value": "Oslo"}, [1, 3]),
    ({"column": "city", "op": "!=", "value": "Oslo"}, [2, 4, 5]),
    ({"column": "status", "op": "in", "value": ["open", "refunded"]}, [2, 4]),
    ({"column": "status", "op": "not_in", "value": ["paid"]}, [2, 4]),
    ({"column": "customer", "op": "contains", "value": "e"}, [2, 5]),
    ({"column": "city", "op": "startswith", "value": "Ber"}, [2, 5]),
    ({"column": "city", "op": "endswith", "value": "sø"}, [4]),
    ({"column": "price", "op": "is_null"}, [3]),
    ({"column": "price", "op": "not_null"}, [1, 2, 4, 5]),
])
def test_filter_operators(condition, expected_ids):
    result = process({"operation": "filter", "rows": ORDERS, "where": [condition]})
    assert ids(result) == expected_ids
    assert result["row_count"] == len(expected_ids)
    assert result["columns"] == ["id", "customer", "city", "price", "status"]


def test_filter_conditions_combine_with_and_or_any():
    where = [{"column": "city", "op": "==", "value": "Bergen"},
             {"column": "price", "op": ">", "value": 15}]
    assert ids(process({"operation": "filter", "rows": ORDERS, "where": where})) == [5]
    assert ids(process({"operation": "filter", "rows": ORDERS, "where": where, "any": True})) \
        == [1, 2, 5]


def test_filter_in_with_an_empty_list_or_nulls():
    empty = process({"operation": "filter", "rows": ORDERS,
                     "where": [{"column": "city", "op": "in", "value": []}]})
    assert empty["rows"] == [] and empty["row_count"] == 0
    nulls = process({"operation": "filter", "rows": ORDERS,
                     "where": [{"column": "price", "op": "in", "value": [None, 7]}]})
    assert ids(nulls) == [3, 4]


def test_filter_refuses_comparing_across_types():
    message = refusal({"operation": "filter", "rows": ORDERS,
                       "where": [{"column": "price", "op": ">", "value": "10"}]})
    assert "rows[0] column 'price' holds the number 30" in message
    assert "cannot be compared with the text '10'" in message
    message = refusal({"operation": "filter", "csv": "a\n1\nx\n",
                       "where": [{"column": "a", "op": "<", "value": 5}]})
    assert "csv row 1 (line 3) column 'a' holds the text 'x'" in message


def test_filter_refuses_bad_conditions():
    assert "unknown op '~'" in refusal(
        {"operation": "filter", "rows": ORDERS,
         "where": [{"column": "city", "op": "~", "value": 1}]})
    assert "unknown column 'town' in filter condition 0" in refusal(
        {"operation": "filter", "rows": ORDERS, "where": [{"column": "town", "value": "Oslo"}]})
    assert "needs 'value' to be a list" in refusal(
        {"operation": "filter", "rows": ORDERS,
         "where": [{"column": "city", "op": "in", "value": "Oslo"}]})
    assert "filter needs payload 'where'" in refusal({"operation": "filter", "rows": ORDERS})
    too_many = [{"column": "city", "value": "Oslo"}] * 101
    assert "'where' has 101 entries; at most 100" in refusal(
        {"operation": "filter", "rows": ORDERS, "where": too_many})


# ----------------------------------------------------------------------------------------- sort

def test_sort_descending_puts_nulls_last():
    assert ids(process({"operation": "sort", "rows": ORDERS, "by": "-price"})) == [1, 5, 2, 4, 3]
    assert ids(process({"operation": "sort", "rows": ORDERS, "by": "price"})) == [4, 2, 5, 1, 3]


def test_sort_by_several_keys_is_stable():
    by = ["city", {"column": "price", "descending": True}]
    assert ids(process({"operation": "sort", "rows": ORDERS, "by": by})) == [5, 2, 1, 3, 4]
    # Equal keys keep their input order.
    assert ids(process({"operation": "sort", "rows": ORDERS, "by": "status"})) == [2, 1, 3, 5, 4]


def test_sort_from_the_description():
    result = process({"rows": ORDERS}, "Sort the rows by price, highest first")
    assert result["operation"] == "sort" and ids(result) == [1, 5, 2, 4, 3]


def test_sort_refuses_mixed_types_and_unknown_columns():
    message = refusal({"operation": "sort", "rows": [{"a": 1}, {"a": "x"}], "by": "a"})
    assert "column 'a' mixes number and text values" in message and "rows[1]" in message
    assert "unknown column 'cost' in payload 'by'" in refusal(
        {"operation": "sort", "rows": ORDERS, "by": "cost"})


# ------------------------------------------------------------------------------------- group_by

def test_group_by_with_aggregates_sorted_by_group():
    aggregates = {
        "orders": {"fn": "count"},
        "priced": {"column": "price", "fn": "count"},
        "revenue": {"column": "price", "fn": "sum"},
        "average": {"column": "price", "fn": "mean"},
        "cheapest": {"column": "price", "fn": "min"},
        "dearest": {"column": "price", "fn": "max"},
        "middle": {"column": "price", "fn": "median"},
        "buyers": {"column": "customer", "fn": "count_distinct"},
        "first_id": {"column": "id", "fn": "first"},
        "last_id": {"column": "id", "fn": "last"},
    }
    result = process({"operation": "group_by", "rows": ORDERS, "by": "city",
                      "aggregates": aggregates})
    assert result["columns"] == ["city", *aggregates]
    assert result["rows"] == [
        {"city": "Bergen", "orders": 2, "priced": 2, "revenue": 32.5, "average": 16.25,
         "cheapest": 12.5, "dearest": 20, "middle": 16.25, "buyers": 1, "first_id": 2,
         "last_id": 5},
        {"city": "Oslo", "orders": 2, "priced": 1, "revenue": 30, "average": 30.0, "cheapest": 30,
         "dearest": 30, "middle": 30, "buyers": 1, "first_id": 1, "last_id": 3},
        {"city": "Tromsø", "orders": 1, "priced": 1, "revenue": 7, "average": 7.0, "cheapest": 7,
         "dearest": 7, "middle": 7, "buyers": 1, "first_id": 4, "last_id": 4},
    ]


def test_group_by_shorthand_and_several_keys():
    result = process({"operation": "group_by", "rows": ORDERS, "by": ["status", "customer"],
                      "aggregates": {"price": "sum"}})
    assert result["rows"] == [
        {"status": "open", "customer": "ben", "price": 12.5},
        {"status": "paid", "customer": "ana", "price": 30},
        {"status": "paid", "customer": "ben", "price": 20},
        {"status": "refunded", "customer": "cai", "price": 7},
    ]


def test_group_by_counts_rows_by_default_and_reads_the_description():
    result = process({"rows": ORDERS}, "Count the orders each customer placed: group by customer")
    assert result["operation"] == "group_by"
    assert result["rows"] == [{"customer": "ana", "count": 2}, {"customer": "ben", "count": 2},
                              {"customer": "cai", "count": 1}]


def test_group_by_refuses_summing_text():
    message = refusal({"operation": "group_by", "rows": ORDERS, "by": "city",
                       "aggregates": {"total": {"column": "status", "fn": "sum"}}})
    assert "needs number values" in message and "rows[0] holds the text 'paid'" in message
    assert "unknown fn 'mode'" in refusal({"operation": "group_by", "rows": ORDERS, "by": "city",
                                           "aggregates": {"x": {"column": "price", "fn": "mode"}}})


# --------------------------------------------------------------------------------------- dedupe

def test_dedupe_keeps_first_or_last():
    rows = [{"email": "a@x", "n": 1}, {"email": "b@x", "n": 2}, {"email": "a@x", "n": 3},
            {"email": "a@x", "n": 1}]
    exact = process({"operation": "dedupe", "rows": rows})
    assert [row["n"] for row in exact["rows"]] == [1, 2, 3] and exact["removed"] == 1
    first = process({"operation": "dedupe", "rows": rows, "subset": "email"})
    assert [row["n"] for row in first["rows"]] == [1, 2] and first["removed"] == 2
    last = process({"operation": "dedupe", "rows": rows, "subset": ["email"], "keep": "last"})
    assert [row["n"] for row in last["rows"]] == [2, 1] and last["removed"] == 2


def test_dedupe_tells_numbers_from_text_and_booleans():
    rows = [{"v": 1}, {"v": "1"}, {"v": True}, {"v": 1.0}]
    assert process({"operation": "dedupe", "rows": rows})["rows"] == [{"v": 1}, {"v": "1"},
                                                                       {"v": True}]


# ----------------------------------------------------------------------------------------- join

CUSTOMERS = [{"customer": "ana", "city": "Oslo", "tier": "gold"},
             {"customer": "ben", "city": "Bergen", "tier": "silver"},
             {"customer": "dan", "city": "Bodø", "tier": "gold"}]
PURCHASES = [{"order": 1, "customer": "ana", "city": "Oslo"},
             {"order": 2, "customer": "ben", "city": "Stavanger"},
             {"order": 3, "customer": "eve", "city": "Oslo"},
             {"order": 4, "customer": "ana", "city": "Bergen"}]


@pytest.mark.parametrize("how, expected", [
    ("inner", [(1, "gold"), (2, "silver"), (4, "gold")]),
    ("left", [(1, "gold"), (2, "silver"), (3, None), (4, "gold")]),
    ("right", [(1, "gold"), (2, "silver"), (4, "gold"), (None, "gold")]),
    ("outer", [(1, "gold"), (2, "silver"), (3, None), (4, "gold"), (None, "gold")]),
])
def test_join_kinds(how, expected):
    result = process({"operation": "join", "left": PURCHASES, "right": CUSTOMERS, "on": "customer",
                      "how": how})
    assert result["columns"] == ["order", "customer", "city_left", "city_right", "tier"]
    assert [(row["order"], row["tier"]) for row in result["rows"]] == expected


def test_join_merges_the_key_and_suffixes_clashes():
    result = process({"operation": "join", "left": PURCHASES, "right": CUSTOMERS, "on": "customer",
                      "how": "outer"})
    assert result["rows"][0] == {"order": 1, "customer": "ana", "city_left": "Oslo",
                                 "city_right": "Oslo", "tier": "gold"}
    assert result["rows"][-1] == {"order": None, "customer": "dan", "city_left": None,
                                  "city_right": "Bodø", "tier": "gold"}


def test_join_rows_with_csv_on_differently_named_keys():
    result = process({"rows": [{"uid": 1, "name": "ana"}, {"uid": 2, "name": "ben"}],
                      "right_csv": "user_id,score\n2,9.5\n1,7\n2,3\n", "left_on": "uid",
                      "right_on": "user_id"}, "Join users with their scores")
    assert result["operation"] == "join"
    assert result["rows"] == [{"uid": 1, "name": "ana", "user_id": 1, "score": 7},
                              {"uid": 2, "name": "ben", "user_id": 2, "score": 9.5},
                              {"uid": 2, "name": "ben", "user_id": 2, "score": 3}]


def test_join_kind_and_key_can_come_from_the_description():
    result = process({"left": PURCHASES, "right": CUSTOMERS},
                     "Left join the purchases onto the customers on customer")
    assert result["how"] == "left" and result["left_on"] == ["customer"]
    assert [row["order"] for row in result["rows"]] == [1, 2, 3, 4]
    message = refusal({"left": PURCHASES, "right": CUSTOMERS}, "join these two tables")
    assert "join needs payload 'on'" in message and "both tables have 'customer', 'city'" in message


def test_join_refuses_keys_of_different_types_and_missing_keys():
    message = refusal({"operation": "join", "left": [{"id": 1}], "right": [{"id": "1"}],
                       "on": "id"})
    assert "'id' holds number values on the left" in message
    assert "'id' holds text values on the right" in message
    assert "unknown column 'customer_id'" in refusal(
        {"operation": "join", "left": PURCHASES, "right": CUSTOMERS, "on": "customer_id"})
    assert "join needs one right table" in refusal({"operation": "join", "rows": PURCHASES,
                                                    "on": "customer"})


# ------------------------------------------------------------------------------ choosing and limits

@pytest.mark.parametrize("example, operation", [
    ("Give me summary statistics for this CSV", "summary"),
    ("Describe each column of the sales table", "summary"),
    ("Profile this dataset: missing values, unique counts, min and max", "summary"),
    ("Compute the mean, median and standard deviation of every column", "summary"),
    ("Sort the rows by price, highest first", "sort"),
    ("Order customers by signup date", "sort"),
    ("Rank employees by salary", "sort"),
    ("Remove duplicate rows from this list", "dedupe"),
    ("Dedupe the contacts by email", "dedupe"),
    ("Drop repeated entries, keeping the last occurrence", "dedupe"),
    ("Group the orders by region and sum the revenue", "group_by"),
    ("Total sales per country", "group_by"),
    ("Count how many orders each customer placed", "group_by"),
    ("Break down revenue by month", "group_by"),
    ("Filter rows where age is over 30", "filter"),
    ("Show only the records with status active", "filter"),
    ("Keep only rows where the country is Norway", "filter"),
    ("Join orders with customers on customer_id", "join"),
    ("Merge these two tables on the id column", "join"),
    ("Left join the users table onto the orders", "join"),
])
def test_every_declared_example_names_its_operation(example, operation):
    from actors.agents.data_processor import OPERATION_CHOOSER

    assert example in DataProcessor.spec.examples
    assert OPERATION_CHOOSER.choose({}, example) == operation


def test_payload_parameters_settle_an_ambiguous_description():
    # "by" fits both sort and group_by, so it cannot decide between them; "aggregates" can.
    message = refusal({"rows": ORDERS, "by": "city"}, "group the rows, then sort them")
    assert "the description mentions group_by, sort" in message
    result = process({"rows": ORDERS, "aggregates": {"price": "sum"}, "by": "city"},
                     "group the rows, then sort them")
    assert result["operation"] == "group_by"
    result = process({"rows": ORDERS, "where": [{"column": "city", "value": "Oslo"}]},
                     "remove the rows where the price is missing, then sort")
    assert result["operation"] == "filter"


def test_an_operation_that_cannot_be_inferred_is_refused_with_the_list():
    message = refusal({"rows": ORDERS}, "do something clever with this")
    assert "set payload 'operation'" in message and "group_by" in message and "dedupe" in message
    assert "unknown operation 'pivot'" in refusal({"operation": "pivot", "rows": ORDERS})


def test_limit_truncates_returned_rows_but_counts_all():
    result = process({"operation": "sort", "rows": ORDERS, "by": "id", "limit": 2})
    assert ids(result) == [1, 2] and result["row_count"] == 5 and result["truncated"] is True
    assert "'limit' must be a whole number from 0 to 100000" in refusal(
        {"operation": "sort", "rows": ORDERS, "by": "id", "limit": 100_001})


