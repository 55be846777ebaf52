"""The learning agent on datasets whose answers are known: exact lines, separable classes, blobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents.learning import OTHER, Learning
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask

LINE = [{"x": x, "y": 2 * x + 1} for x in range(20)]  # y = 2x + 1, exactly
# Two classes far apart on "size"; "colour" says nothing (it alternates in both classes).
SEPARABLE = [{"size": size, "weight": size * 0.5 + (index % 3),
              "colour": ("red", "blue")[index % 2], "kind": "small" if size < 15 else "large"}
             for index, size in enumerate([*range(0, 10), *range(20, 30)])]
# Three tight blobs of 5, 7 and 4 points around (0, 0), (10, 10) and (0, 10).
BLOBS = [{"x": cx + (k % 3) * 0.1, "y": cy + (k % 2) * 0.1}
         for cx, cy, size in ((0, 0, 5), (10, 10, 7), (0, 10, 4)) for k in range(size)]


def learn(payload: dict[str, Any], description: str = "") -> Any:
    task = AgentTask(task_id="t", attempt=1, agent_type="learning", description=description,
                     payload=payload, timeout_s=30)
    result = asyncio.run(Learning().run(task))
    json.dumps(result, allow_nan=False)  # every result is plain JSON
    return result


def refusal(payload: dict[str, Any], description: str = "") -> str:
    with pytest.raises(InvalidTaskInput) as caught:
        learn(payload, description)
    return str(caught.value)


def test_spec_declares_what_the_router_learns_from():
    spec = Learning.spec
    assert spec.name == "learning" and issubclass(Learning, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.5 and spec.resources.memory_mb == 1024
    assert spec.concurrency == 2 and spec.replicas == 1


def test_scikit_learn_is_imported_only_when_a_task_runs():
    code = "import sys, actors.agents.learning; print('sklearn' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert shown.strip() == "False"


# ----------------------------------------------------------------------------------- regression

def test_a_straight_line_is_learned_exactly():
    result = learn({"rows": LINE, "target": "y", "predict": [{"x": 100}, {"x": -3}]})
    assert (result["task"], result["model"]) == ("regression", "linear_regression")
    assert result["task_reason"] == "target 'y' holds numbers"
    evaluation = result["evaluation"]
    assert evaluation["method"] == "5-fold cross-validation" and evaluation["folds"] == 5
    assert evaluation["r2"] == pytest.approx(1.0)
    assert evaluation["mae"] == pytest.approx(0, abs=1e-6)
    assert evaluation["rmse"] == pytest.approx(0, abs=1e-6)
    assert result["coefficients"] == {"x": pytest.approx(2.0)}
    assert result["intercept"] == pytest.approx(1.0)
    assert result["predictions"] == [pytest.approx(201.0), pytest.approx(-5.0)]
    assert result["warnings"] == []


def test_ridge_and_forest_regressions_from_csv():
    csv = "x,y\n" + "".join(f"{row['x']},{row['y']}\n" for row in LINE)
    ridge = learn({"csv": csv, "target": "y", "model": "ridge", "predict": [{"x": 10}]})
    assert ridge["model"] == "ridge" and ridge["evaluation"]["r2"] > 0.99
    assert ridge["predictions"][0] == pytest.approx(21.0, abs=0.5)  # shrunk a little toward 20
    forest = learn({"csv": csv, "target": "y", "model": "random_forest"})
    assert forest["evaluation"]["r2"] > 0.9
    assert forest["feature_importances"] == {"x": 1.0}


def test_categories_are_one_hot_encoded_and_gaps_imputed():
    # price = 10 * rooms + 50 in Oslo, + 0 in Bergen. Row 2 loses its rooms (2), row 5 its city
    # (Bergen).
    rows = [{"rooms": r, "city": c, "price": 10 * r + (50 if c == "Oslo" else 0)}
            for r in range(1, 7) for c in ("Oslo", "Bergen")]
    complete = learn({"rows": rows, "target": "price"})
    assert complete["preprocessing"]["imputed"] == {}
    assert complete["coefficients"]["rooms"] == pytest.approx(10)
    assert complete["coefficients"]["city=Oslo"] - complete["coefficients"]["city=Bergen"] \
        == pytest.approx(50)
    rows[2] = {**rows[2], "rooms": None}
    rows[5] = {**rows[5], "city": None}
    result = learn({"rows": rows, "target": "price"})
    prep = result["preprocessing"]
    assert prep["numeric"] == ["rooms"] and prep["one_hot"] == {"city": ["Bergen", "Oslo"]}
    # rooms present: 1,1,2,3,3,4,4,5,5,6,6 → median 4; city: Oslo 6, Bergen 5 → Oslo.
    assert prep["imputed"] == {"rooms": {"missing": 1, "strategy": "median", "value": 4.0},
                               "city": {"missing": 1, "strategy": "most_frequent",
                                        "value": "Oslo"}}
    assert prep["encoded_features"] == 3 and prep["dropped_rows"] == 0
    assert set(result["coefficients"]) == {"rooms", "city=Bergen", "city=Oslo"}


def test_rows_without_a_target_are_dropped_and_reported():
    rows = [*LINE, {"x": 50, "y": None}]
    result = learn({"rows": rows, "target": "y"})
    assert result["rows_used"] == 20 and result["preprocessing"]["dropped_rows"] == 1
    assert "dropped 1 rows without a value in the target column 'y'" in result["warnings"]


def test_few_rows_are_scored_on_the_training_data_with_a_warning():
    result = learn({"rows": LINE[:5], "target": "y"})
    assert result["evaluation"]["method"] == "training set"
    assert result["evaluation"]["r2"] == pytest.approx(1.0)
    assert any("only 5 rows" in warning and "training data" in warning
               for warning in result["warnings"])


def test_more_than_fifty_categories_keep_the_most_frequent():
    rows = [{"code": f"c{index % 60:02d}", "n": index, "y": index * 3.0} for index in range(120)]
    result = learn({"rows": rows, "target": "y", "features": ["code", "n"]})
    categories = result["preprocessing"]["one_hot"]["code"]
    assert len(categories) == 50 and categories[-1] == OTHER and categories[0] == "c00"
    assert result["features"] == ["n", "code"]


# ------------------------------------------------------------------------------- classification

@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "knn"])
def test_separable_classes_are_classified_perfectly(model):
    predict = [{"size": 2, "weight": 1, "colour": "red"},
               {"size": 27, "weight": 13, "colour": "green"}]
    result = learn({"rows": SEPARABLE, "target": "kind", "model": model, "predict": predict})
    assert result["task"] == "classification" and result["classes"] == ["large", "small"]
    evaluation = result["evaluation"]
    assert evaluation["method"] == "5-fold cross-validation"
    assert evaluation["accuracy"] == 1.0 and evaluation["f1_macro"] == 1.0
    assert evaluation["baseline_accuracy"] == 0.5
    assert evaluation["per_class"] == [
        {"class": "large", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10},
        {"class": "small", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10}]
    assert evaluation["confusion_matrix"] == [[10, 0], [0, 10]]
    assert result["predictions"] == ["small", "large"]
    for probabilities in result["probabilities"]:
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert result["probabilities"][0][1] > 0.5 and result["probabilities"][1][0] > 0.5
    assert any("unseen in training" in warning for warning in result["warnings"])


def test_a_forest_reports_which_features_matter_and_is_deterministic():
    payload = {"rows": SEPARABLE, "target": "kind", "model": "rf"}
    first, second = learn(payload), learn(payload)
    assert first == second
    importances = first["feature_importances"]
    assert set(importances) == {"size", "weight", "colour=blue", "colour=red"}
    assert max(importances, key=importances.get) in ("size", "weight")


def test_few_whole_numbers_are_read_as_classes():
    rows = [{"x": x, "label": int(x >= 6)} for x in range(12)]
    result = learn({"rows": rows, "target": "label"})
    assert result["task"] == "classification" and result["classes"] == [0, 1]
    assert result["task_reason"] == ("target 'label' holds 2 distinct whole numbers in 12 rows, "
                                     "read as classes")


def test_folds_follow_the_smallest_class():
    rows = [{"x": x, "c": "a" if x < 9 else "b"} for x in range(12)]  # class b has 3 rows
    assert learn({"rows": rows, "target": "c"})["evaluation"]["folds"] == 3
    rows[-1]["c"] = rows[-2]["c"] = "a"  # class b has 1 row: no stratified folds possible
    result = learn({"rows": rows, "target": "c"})
    assert result["evaluation"]["method"] == "training set"
    assert any("a class has a single row" in warning for warning in result["warnings"])


def test_the_task_can_be_stated():
    rows = [{"x": x, "label": int(x >= 6)} for x in range(12)]
    stated = learn({"rows": rows, "target": "label", "task": "regression"})
    assert stated["task"] == "regression" and stated["task_reason"] == "set by payload 'task'"
    described = learn({"rows": LINE, "target": "y"}, "Classify each row by y")
    assert described["task"] == "classification"


# ----------------------------------------------------------------------------------- clustering

def test_three_blobs_make_three_clusters():
    result = learn({"rows": BLOBS, "predict": [{"x": 9.9, "y": 10.2}, {"x": 0, "y": 9.5}]})
    assert (result["task"], result["model"]) == ("clustering", "kmeans")
    assert result["task_reason"] == "no target column given"
    assert result["n_clusters"] == 3 and result["cluster_sizes"] == [5, 7, 4]
    assert result["assignments"] == [0] * 5 + [1] * 7 + [2] * 4
    assert result["silhouette"] > 0.95
    centres = [(c["x"], c["y"]) for c in result["centroids"]]
    assert centres[0] == (pytest.approx(0.08), pytest.approx(0.04))  # mean of blob 1, by hand
    assert centres[1] == (pytest.approx(10.0857, abs=1e-3), pytest.approx(10.0429, abs=1e-3))
    assert centres[2] == (pytest.approx(0.075), pytest.approx(10.05))
    assert result["predictions"] == [1, 2]


def test_clusters_over_categories_report_shares():
    rows = [{"x": 0.0 + i * 0.01, "shop": "A"} for i in range(6)] + \
           [{"x": 10.0 + i * 0.01, "shop": "B" if i < 3 else "C"} for i in range(6)]
    result = learn({"rows": rows, "n_clusters": 2}, "Segment the stores")
    assert result["cluster_sizes"] == [6, 6]
    assert result["centroids"][0]["shop"] == {"A": 1.0, "B": 0.0, "C": 0.0}
    assert result["centroids"][1]["shop"] == {"A": 0.0, "B": 0.5, "C": 0.5}
    assert result["centroids"][1]["x"] == pytest.approx(10.025)


@pytest.mark.parametrize("n_clusters, fragment", [
    (1, "'n_clusters' must be a whole number from 2 to 50, got the number 1"),
    (51, "from 2 to 50"),
    (True, "got the boolean true"),
    (16, "16 clusters need at least 17 rows; got 16"),
])
def test_cluster_count_is_bounded(n_clusters, fragment):
    assert fragment in refusal({"rows": BLOBS, "n_clusters": n_clusters})


# --------------------------------------------------------------------------------------- errors

def test_a_missing_target_column_is_named():
    message = refusal({"rows": LINE, "target": "price"})
    assert "target column 'price' is not in rows; available columns: 'x', 'y'" in message
    assert "classification needs payload 'target'" in refusal(
        {"rows": LINE, "task": "classification"})


def test_regression_needs_a_numeric_target():
    rows = [{"x": x, "y": ("low", "high")[x % 2]} for x in range(12)]
    message = refusal({"rows": rows, "target": "y", "task": "regression"})
    assert "regression needs a numeric target, but 'y' holds text values" in message
    assert "rows[0] holds the text 'low'" in message


def test_one_class_cannot_be_learned():
    rows = [{"x": x, "ok": True} for x in range(12)]
    message = refusal({"rows": rows, "target": "ok"})
    assert "the target 'ok' has only one class (the boolean true) in its 12 rows" in message


def test_a_constant_numeric_target_cannot_be_regressed():
    message = refusal({"rows": [{"x": x, "y": 5.5} for x in range(12)], "target": "y"})
    assert "the target 'y' has the same value in every row" in message


def test_fewer_than_three_rows_are_refused():
    assert "needs at least 3 rows with a target value; got 2" in refusal(
        {"rows": LINE[:2], "target": "y"})
    rows = [*LINE[:2], {"x": 9, "y": None}]
    assert "got 2" in refusal({"rows": rows, "target": "y"})


@pytest.mark.parametrize("rows, fragment", [
    ([{"x": 1, "y": 1}, {"x": [1, 2], "y": 2}], "rows[1] column 'x' holds a list"),
    ([{"x": {"a": 1}, "y": 1}], "rows[0] column 'x' holds an object"),
    ([*LINE[:5], {"x": "five", "y": 11}],
     "column 'x' mixes number and text values (rows[0] holds the number 0, rows[5] holds "
     "the text 'five'), so it cannot be used as a feature"),
    ([{**row, "blank": None} for row in LINE],
     "feature column 'blank' has no values (every row is null)"),
])
def test_unusable_feature_data_is_refused_naming_the_cell(rows, fragment):
    assert fragment in refusal({"rows": rows, "target": "y"})


def test_predict_rows_must_carry_the_features():
    rows = [{"a": x, "b": x % 3, "y": 2 * x} for x in range(12)]
    message = refusal({"rows": rows, "target": "y", "predict": [{"a": 1}]})
    assert "predict rows lack feature column 'b'; the model was trained on: 'a', 'b'" in message
    message = refusal({"rows": rows, "target": "y", "predict": [{"a": 1, "b": "two"}]})
    assert "predict[0] column 'b' holds the text 'two', but the feature holds number values" \
        in message


@pytest.mark.parametrize("payload, fragment", [
    ({"rows": LINE, "target": "y", "model": "svm"},
     "unknown model 'svm' for regression; accepted: linear_regression, ridge, random_forest"),
    ({"rows": LINE, "target": "y", "task": "ranking"},
     "unknown task 'ranking'; accepted: classification, regression, clustering"),
    ({"rows": LINE, "target": "y", "features": ["x", "z"]}, "feature column 'z' is not in rows"),
    ({"rows": LINE, "target": "y", "features": ["y"]}, "the target 'y' cannot also be a feature"),
    ({"rows": [{"y": 1}] * 5, "target": "y"}, "no feature columns to learn from"),
    ({"target": "y"}, "learning needs a table"),
    ({"rows": [{"x": 1}] * 50_001, "target": "x"}, "at most 50000 can be trained on"),
])
def test_bad_requests_are_refused_with_the_options(payload, fragment):
    assert fragment in refusal(payload)
