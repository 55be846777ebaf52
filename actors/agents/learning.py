"""The `learning` agent: fits a scikit-learn model to a table, evaluates it honestly, predicts.

A table comes as payload "rows" (a list of objects, or CSV text) or "csv". Payload "target" names
the column to predict; "features" (default: every other column) the inputs. The task is payload
"task" (classification, regression or clustering), else what "model" or clear words in the
description imply, else the data: no target → clustering; a text or boolean target, or a few
distinct whole numbers → classification; any other numeric target → regression.

Preparation, reported under "preprocessing": rows without a target value are dropped; numeric
features have missing values imputed with the median and are standardised; text and boolean
features have missing values imputed with the most frequent value and are one-hot encoded, keeping
the 49 most frequent values and grouping the rest as "(other)" when a column has more than 50.

Evaluation, under "evaluation": with at least 10 rows, k-fold cross-validation (stratified, k at
most 5 and at most the smallest class's size, for classifiers) on held-out predictions, preparation
refitted in every fold; with fewer rows, metrics on the training data and a warning saying so.
The model is then fitted on all rows; payload "predict" (rows or CSV with the feature columns)
gets its predictions, and class probabilities from classifiers. Everything uses random_state 0, so
the same task gives the same answer. Clusters are numbered in order of their first row.

scikit-learn is imported only when a task runs. Its fits run one at a time per replica, because
capturing its warnings (reported under "warnings") swaps process-wide state.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from actors.agent import Agent, invalid
from actors.agents.tables import (
    Cell, Row, Table, cell_key, column_kind, describe, kind_of, payload_table,
    read_table)
from ml.config import ML_RESOURCE
from storage.messages import AgentSpec, AgentTask, Resources

TASKS = ("classification", "regression", "clustering")
MODELS = {
    "classification": ("logistic_regression", "random_forest", "knn"),
    "regression": ("linear_regression", "ridge", "random_forest"),
    "clustering": ("kmeans",),
}
MAX_TRAINING_ROWS = 50_000
MAX_FEATURES = 200
MAX_CATEGORIES = 50
MAX_CLASSES = 100
MAX_ENCODED_CELLS = 10_000_000
MIN_ROWS = 3
MIN_CROSS_VALIDATION_ROWS = 10
MAX_FOLDS = 5
DEFAULT_CLUSTERS, MIN_CLUSTERS, MAX_CLUSTERS = 3, 2, 50
SILHOUETTE_SAMPLE = 5_000
RANDOM_STATE = 0
OTHER = "(other)"

_TASK_ALIASES = {"classify": "classification", "classifier": "classification",
                 "regress": "regression", "regressor": "regression", "cluster": "clustering"}
_MODEL_ALIASES = {
    "logistic": "logistic_regression", "logreg": "logistic_regression",
    "linear": "linear_regression", "ols": "linear_regression", "rf": "random_forest",
    "forest": "random_forest", "k_nearest_neighbors": "knn", "nearest_neighbors": "knn",
    "k_means": "kmeans", "ridge_regression": "ridge",
}
_TASK_OF_MODEL = {"logistic_regression": "classification", "knn": "classification",
                  "linear_regression": "regression", "ridge": "regression",
                  "kmeans": "clustering"}
_DESCRIBED = {task: re.compile(pattern, re.IGNORECASE) for task, pattern in {
    "classification": r"\bclassif\w*|\bcategori[sz]e\b|\bpredict (?:whether|which|if)\b",
    "regression": r"\bregression\b|\bregress\b|\bforecast\w*",
    "clustering": r"\bclust\w*|\bsegment\w*|\bk-?means\b",
}.items()}
_DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_FIT_LOCK = threading.Lock()


def _name(value: Any, aliases: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    key = re.sub(r"[\s-]+", "_", value.strip().lower())
    return aliases.get(key, key)


def _metric(value: Any) -> float | None:
    number = float(value)
    return round(number, 6) if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON value it stands for."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ------------------------------------------------------------------------------- the inputs

def _input_table(payload: dict[str, Any]) -> Table:
    table = payload_table(payload, "learning")
    if len(table.rows) > MAX_TRAINING_ROWS:
        raise invalid(f"{table.source} has {len(table.rows)} rows; at most {MAX_TRAINING_ROWS} "
                      "can be trained on", field=table.source, limit=MAX_TRAINING_ROWS)
    return table


def _target(payload: dict[str, Any], table: Table) -> str | None:
    target = payload.get("target")
    if target is None:
        return None
    if not isinstance(target, str) or not target:
        raise invalid(f"payload 'target' must be a column name, got {describe(target)}",
                      field="target")
    if target not in table.columns:
        raise invalid(f"target column {target!r} is not in {table.source}; available columns: "
                      f"{', '.join(map(repr, table.columns))}", field="target",
                      column=target, available=list(table.columns))
    return target


def _few_whole_numbers(values: list[Cell]) -> int | None:
    """How many distinct whole numbers the values hold, if few enough to read as classes."""
    if not all(isinstance(v, int) or float(v).is_integer() for v in values):  # type: ignore
        return None
    distinct = len({cell_key(value) for value in values})
    return distinct if distinct <= min(10, max(2, len(values) // 2)) else None


def choose_task(payload: dict[str, Any], description: str, table: Table, target: str | None
                ) -> tuple[str, str]:
    """The task, and why: payload "task", the model named, the description, or the target."""
    if payload.get("task") is not None:
        task = _name(payload["task"], _TASK_ALIASES)
        if task not in TASKS:
            raise invalid(f"unknown task {payload['task']!r}; accepted: {', '.join(TASKS)}",
                          field="task", accepted=list(TASKS))
        return task, "set by payload 'task'"
    model = _name(payload.get("model"), _MODEL_ALIASES)
    if model in _TASK_OF_MODEL:
        return _TASK_OF_MODEL[model], f"model {model!r} does {_TASK_OF_MODEL[model]}"
    described = [task for task, pattern in _DESCRIBED.items() if pattern.search(description)]
    if len(described) == 1:
        return described[0], "named in the description"
    if target is None:
        return "clustering", "no target column given"
    values = [row[target] for row in table.rows if row[target] is not None]
    kind = column_kind(table, target, "used as the target")
    if kind in ("text", "boolean"):
        return "classification", f"target {target!r} holds {kind} values"
    if kind == "number":
        distinct = _few_whole_numbers(values)
        if distinct is not None:
            return "classification", (f"target {target!r} holds {distinct} distinct whole numbers "
                                      f"in {len(values)} rows, read as classes")
    return "regression", f"target {target!r} holds numbers"


def _model(payload: dict[str, Any], task: str) -> str:
    named = payload.get("model")
    if named is None:
        return MODELS[task][0]
    model = _name(named, _MODEL_ALIASES)
    if model not in MODELS[task]:
        raise invalid(f"unknown model {named!r} for {task}; accepted: "
                      f"{', '.join(MODELS[task])}", field="model", accepted=list(MODELS[task]))
    return model


def _feature_columns(payload: dict[str, Any], table: Table, target: str | None) -> list[str]:
    named = payload.get("features")
    if named is None:
        columns = [column for column in table.columns if column != target]
    else:
        if (not isinstance(named, list) or not named
                or not all(isinstance(name, str) and name for name in named)):
            raise invalid(f"payload 'features' must be a non-empty list of column names, got "
                          f"{describe(named)}", field="features")
        missing = [name for name in named if name not in table.columns]
        if missing:
            raise invalid(f"feature column {missing[0]!r} is not in {table.source}; available "
                          f"columns: {', '.join(map(repr, table.columns))}", field="features",
                          column=missing[0])
        if target in named:
            raise invalid(f"the target {target!r} cannot also be a feature", field="features")
        columns = list(dict.fromkeys(named))
    if not columns:
        raise invalid("there are no feature columns to learn from besides the target",
                      field="features")
    if len(columns) > MAX_FEATURES:
        raise invalid(f"{len(columns)} feature columns; at most {MAX_FEATURES}",
                      field="features", limit=MAX_FEATURES)
    return columns


# ------------------------------------------------------------------------------ the encoding

@dataclass(frozen=True)
class Feature:
    """One input column and how it becomes numbers: as itself, or as a category code."""

    column: str
    kind: str  # the values' kind: "number", "text" or "boolean"
    categories: tuple[Cell, ...] = ()  # for text and boolean; OTHER last when rarer were grouped
    codes: dict[tuple[str, Cell], int] = field(default_factory=dict)

    @property
    def numeric(self) -> bool:
        return self.kind == "number"

    def encode(self, value: Cell) -> float:
        """The cell's number: NaN when missing; -1 (no category) when unseen and none grouped."""
        if value is None:
            return math.nan
        if self.numeric:
            return float(value)
        code = self.codes.get(cell_key(value))
        if code is None:
            return float(len(self.categories) - 1) if self.categories[-1] == OTHER else -1.0
        return float(code)

    def names(self) -> list[str]:
        if self.numeric:
            return [self.column]
        return [f"{self.column}={_label(category)}" for category in self.categories]


def _label(value: Cell) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _feature(table: Table, column: str, rows: Sequence[Row], warnings_: list[str]) -> Feature:
    kind = column_kind(table, column, "used as a feature")
    present = [row[column] for row in rows if row[column] is not None]
    if not present:
        raise invalid(f"feature column {column!r} has no values (every row is null); drop it "
                      "from 'features'", field="features", column=column)
    if kind == "number":
        return Feature(column, kind)
    counts = Counter(cell_key(value) for value in present)
    if len(counts) == len(rows) >= MIN_CROSS_VALIDATION_ROWS:
        warnings_.append(f"feature {column!r} has a different value in every row; it looks like "
                         "an identifier and is unlikely to help")
    if len(counts) <= MAX_CATEGORIES:
        kept = sorted(counts)
        categories = tuple(value for _, value in kept)
    else:
        kept = sorted(key for key, _ in counts.most_common(MAX_CATEGORIES - 1))
        categories = (*(value for _, value in kept), OTHER)
    return Feature(column, kind, categories, {key: code for code, key in enumerate(kept)})


def _matrix(features: Sequence[Feature], rows: Sequence[Row], table: Table) -> Any:
    """The rows as a float matrix, numeric features first; every cell's kind is checked."""
    import numpy as np

    matrix = np.empty((len(rows), len(features)), dtype=float)
    for index, row in enumerate(rows):
        for position, feature in enumerate(features):
            value = row.get(feature.column)
            if value is not None and kind_of(value) != feature.kind:
                raise invalid(f"{table.label(index)} column {feature.column!r} holds "
                              f"{describe(value)}, but the feature holds {feature.kind} values",
                              row=index, column=feature.column)
            matrix[index, position] = feature.encode(value)
    return matrix


def _preparation(features: Sequence[Feature]) -> Any:
    """Imputation, scaling and one-hot encoding, refitted wherever the model is."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i, feature in enumerate(features) if feature.numeric]
    categorical = [i for i, feature in enumerate(features) if not feature.numeric]
    parts = []
    if numeric:
        parts.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler())]), numeric))
    if categorical:
        categories = [[float(code) for code in range(len(features[i].categories))]
                      for i in categorical]
        parts.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ("one_hot", OneHotEncoder(categories=categories, handle_unknown="ignore",
                                      sparse_output=False))]), categorical))
    return ColumnTransformer(parts)


def _estimator(task: str, model: str, rows: int, clusters: int) -> Any:
    if task == "clustering":
        from sklearn.cluster import KMeans
        return KMeans(n_clusters=clusters, n_init=10, random_state=RANDOM_STATE)
    if model == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
        forest = RandomForestClassifier if task == "classification" else RandomForestRegressor
        return forest(n_estimators=100, random_state=RANDOM_STATE, n_jobs=1)
    if model == "logistic_regression":
        from sklearn.linear_model import LogisticRegression
        return LogisticRegression(max_iter=1000, random_state=RANDOM_STATE)
    if model == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        return KNeighborsClassifier(n_neighbors=max(1, min(5, rows // 2)))
    from sklearn.linear_model import LinearRegression, Ridge
    return Ridge(alpha=1.0) if model == "ridge" else LinearRegression()


@contextmanager
def _captured(notes: list[str]) -> Iterator[None]:
    """Collect scikit-learn's user-facing warnings into `notes` instead of the process's log."""
    with _FIT_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                text = str(warning.message)
                if not issubclass(warning.category, _DEVELOPER_WARNINGS) and text not in notes:
                    notes.append(text)


# ------------------------------------------------------------------------------ the learning

@dataclass
class Problem:
    """Everything decided before fitting: what is learned from which rows, and how."""

    table: Table
    task: str
    task_reason: str
    model: str
    target: str | None
    features: list[Feature]
    rows: list[Row]
    clusters: int
    warnings: list[str]

    def report(self) -> dict[str, Any]:
        return {"task": self.task, "task_reason": self.task_reason, "model": self.model,
                "target": self.target, "rows_used": len(self.rows),
                "features": [feature.column for feature in self.features]}


def _clusters(payload: dict[str, Any], rows: int) -> int:
    value = payload.get("n_clusters", DEFAULT_CLUSTERS)
    if (isinstance(value, bool) or not isinstance(value, int)
            or not MIN_CLUSTERS <= value <= MAX_CLUSTERS):
        raise invalid(f"payload 'n_clusters' must be a whole number from {MIN_CLUSTERS} to "
                      f"{MAX_CLUSTERS}, got {describe(value)}", field="n_clusters")
    if value >= rows:
        raise invalid(f"{value} clusters need at least {value + 1} rows; got {rows}",
                      field="n_clusters")
    return value


def define_problem(payload: dict[str, Any], description: str) -> Problem:
    """Check the task's inputs and decide the task, model, rows and features."""
    table = _input_table(payload)
    target = _target(payload, table)
    task, reason = choose_task(payload, description, table, target)
    model = _model(payload, task)
    if task != "clustering" and target is None:
        raise invalid(f"{task} needs payload 'target' naming the column to predict; columns: "
                      f"{', '.join(map(repr, table.columns))}", field="target")
    columns = _feature_columns(payload, table, target)
    notes: list[str] = []
    rows = table.rows if target is None or task == "clustering" else [
        row for row in table.rows if row[target] is not None]
    if len(rows) < len(table.rows):
        notes.append(f"dropped {len(table.rows) - len(rows)} rows without a value in the target "
                     f"column {target!r}")
    if len(rows) < MIN_ROWS:
        raise invalid(f"learning needs at least {MIN_ROWS} rows"
                      f"{' with a target value' if target and task != 'clustering' else ''}; "
                      f"got {len(rows)}", field=table.source, rows=len(rows))
    features = [_feature(table, column, rows, notes) for column in columns]
    width = sum(1 if feature.numeric else len(feature.categories) for feature in features)
    if width * len(rows) > MAX_ENCODED_CELLS:
        raise invalid(f"{len(rows)} rows of {width} encoded features exceed {MAX_ENCODED_CELLS} "
                      "cells; use fewer rows or features", field="features")
    features.sort(key=lambda feature: not feature.numeric)  # the preparation's column order
    clusters = _clusters(payload, len(rows)) if task == "clustering" else 0
    return Problem(table, task, reason, model, target, features, rows, clusters, notes)


def _classes(problem: Problem) -> tuple[list[Cell], Any]:
    """The target's classes in order, and each row's class index."""
    import numpy as np

    target = problem.target
    assert target is not None
    column_kind(problem.table, target, "used as the target")
    counts = Counter(cell_key(row[target]) for row in problem.rows)
    if len(counts) < 2:
        (_, only), = counts
        raise invalid(f"the target {target!r} has only one class ({describe(only)}) in its "
                      f"{len(problem.rows)} rows; classification needs at least two",
                      field="target", column=target)
    if len(counts) > MAX_CLASSES:
        raise invalid(f"the target {target!r} has {len(counts)} classes; at most {MAX_CLASSES}"
                      " (for a numeric target, set task 'regression')", field="target")
    keys = sorted(counts)
    index = {key: position for position, key in enumerate(keys)}
    labels = np.array([index[cell_key(row[target])] for row in problem.rows])
    return [value for _, value in keys], labels


def _numeric_target(problem: Problem) -> Any:
    import numpy as np

    target = problem.target
    assert target is not None
    kind = column_kind(problem.table, target, "used as the target")
    if kind != "number":
        first = next(i for i, row in enumerate(problem.table.rows) if row[target] is not None)
        raise invalid(f"regression needs a numeric target, but {target!r} holds {kind} values "
                      f"({problem.table.label(first)} holds "
                      f"{describe(problem.table.rows[first][target])}); set task "
                      "'classification' to predict categories", field="target", column=target)
    values = np.array([float(row[target]) for row in problem.rows])  # type: ignore[arg-type]
    if len(set(values.tolist())) < 2:
        raise invalid(f"the target {target!r} has the same value in every row; there is "
                      "nothing to learn", field="target", column=target)
    return values


def _held_out(problem: Problem, pipeline: Any, x: Any, y: Any, folds: int) -> tuple[Any, dict]:
    """Predictions for every row from a model that did not see it (or, with too few rows, the
    training predictions), and how they were made."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    if len(y) < MIN_CROSS_VALIDATION_ROWS or folds < 2:
        why = (f"only {len(y)} rows" if len(y) < MIN_CROSS_VALIDATION_ROWS
               else "a class has a single row")
        problem.warnings.append(f"{why}: metrics are measured on the training data and "
                                "overstate how well the model generalises")
        return pipeline.fit(x, y).predict(x), {"method": "training set"}
    splitter = (StratifiedKFold if problem.task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=RANDOM_STATE)
    return (cross_val_predict(pipeline, x, y, cv=splitter),
            {"method": f"{folds}-fold cross-validation", "folds": folds})


def _pipeline(problem: Problem) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline([("prepare", _preparation(problem.features)),
                     ("model", _estimator(problem.task, problem.model, len(problem.rows),
                                          problem.clusters))])


def _classify(problem: Problem, x: Any) -> tuple[dict[str, Any], Any, list[Cell]]:
    import numpy as np
    from sklearn.metrics import (
        accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support)

    classes, y = _classes(problem)
    counts = np.bincount(y, minlength=len(classes))
    folds = min(MAX_FOLDS, int(counts.min()))
    predicted, evaluation = _held_out(problem, _pipeline(problem), x, y, folds)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    evaluation.update(
        accuracy=_metric(accuracy_score(y, predicted)),
        f1_macro=_metric(f1_score(y, predicted, labels=labels, average="macro", zero_division=0)),
        baseline_accuracy=_metric(counts.max() / len(y)),
        per_class=[{"class": label, "precision": _metric(p), "recall": _metric(r),
                    "f1": _metric(f), "support": int(s)}
                   for label, p, r, f, s in zip(classes, precision, recall, f1, support)],
        confusion_matrix=confusion_matrix(y, predicted, labels=labels).tolist())
    return evaluation, _pipeline(problem).fit(x, y), classes


def _regress(problem: Problem, x: Any) -> tuple[dict[str, Any], Any]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = _numeric_target(problem)
    predicted, evaluation = _held_out(problem, _pipeline(problem), x, y, MAX_FOLDS)
    evaluation.update(r2=_metric(r2_score(y, predicted)),
                      mae=_metric(mean_absolute_error(y, predicted)),
                      rmse=_metric(np.sqrt(mean_squared_error(y, predicted))))
    return evaluation, _pipeline(problem).fit(x, y)


def _encoded_names(problem: Problem) -> list[str]:
    return [name for feature in problem.features for name in feature.names()]


def _model_summary(problem: Problem, fitted: Any) -> dict[str, Any]:
    """Coefficients of linear regressions, in the features' own units; forest importances."""
    estimator = fitted.named_steps["model"]
    names = _encoded_names(problem)
    if hasattr(estimator, "feature_importances_"):
        ranked = sorted(zip(names, estimator.feature_importances_), key=lambda p: -p[1])
        return {"feature_importances": {name: _metric(value) for name, value in ranked[:50]}}
    if problem.task != "regression":
        return {}
    coefficients = [float(value) for value in estimator.coef_]
    intercept = float(estimator.intercept_)
    numeric = sum(1 for feature in problem.features if feature.numeric)
    if numeric:
        scaler = fitted.named_steps["prepare"].named_transformers_["numeric"].named_steps["scale"]
        for i in range(numeric):
            coefficients[i] /= float(scaler.scale_[i])
            intercept -= coefficients[i] * float(scaler.mean_[i])
    return {"coefficients": {name: _metric(value) for name, value in zip(names, coefficients)},
            "intercept": _metric(intercept)}


def _preprocessing(problem: Problem, fitted: Any) -> dict[str, Any]:
    """What preparation did: encodings and the values missing cells were given."""
    prepare = fitted.named_steps["prepare"]
    numeric = [feature for feature in problem.features if feature.numeric]
    categorical = [feature for feature in problem.features if not feature.numeric]
    imputed: dict[str, Any] = {}
    for group, members, strategy in (("numeric", numeric, "median"),
                                     ("categorical", categorical, "most_frequent")):
        if not members:
            continue
        statistics = prepare.named_transformers_[group].named_steps["impute"].statistics_
        for position, feature in enumerate(members):
            missing = sum(1 for row in problem.rows if row[feature.column] is None)
            if missing:
                value = float(statistics[position])
                imputed[feature.column] = {
                    "missing": missing, "strategy": strategy,
                    "value": _plain(value) if feature.numeric else feature.categories[int(value)]}
    return {"numeric": [feature.column for feature in numeric], "standardised": True,
            "one_hot": {feature.column: list(feature.categories) for feature in categorical},
            "imputed": imputed, "dropped_rows": len(problem.table.rows) - len(problem.rows),
            "encoded_features": len(_encoded_names(problem))}


def _cluster(problem: Problem, x: Any) -> tuple[dict[str, Any], Any, list[int]]:
    """KMeans on the prepared features; clusters renumbered in order of their first row."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    fitted = _pipeline(problem).fit(x)
    kmeans = fitted.named_steps["model"]
    order = list(dict.fromkeys(kmeans.labels_.tolist()))
    order += [label for label in range(problem.clusters) if label not in order]
    renumber = {old: new for new, old in enumerate(order)}
    assignments = [renumber[label] for label in kmeans.labels_.tolist()]
    prepared = fitted.named_steps["prepare"].transform(x)
    silhouette = None
    if 2 <= len(set(assignments)) < len(assignments):
        sample = SILHOUETTE_SAMPLE if len(assignments) > SILHOUETTE_SAMPLE else None
        silhouette = _metric(silhouette_score(prepared, assignments, sample_size=sample,
                                              random_state=RANDOM_STATE))
    else:
        problem.warnings.append("the rows fell into fewer distinct clusters than asked for; "
                                "no silhouette score")
    result = {"n_clusters": problem.clusters,
              "cluster_sizes": np.bincount(assignments, minlength=problem.clusters).tolist(),
              "silhouette": silhouette, "inertia": _metric(kmeans.inertia_),
              "centroids": [_centroid(problem, fitted, kmeans.cluster_centers_[old])
                            for old in order],
              "assignments": assignments}
    return result, fitted, order


def _centroid(problem: Problem, fitted: Any, center: Any) -> dict[str, Any]:
    """A cluster centre in the features' own terms: a value per number, shares per category."""
    centroid: dict[str, Any] = {}
    numeric = [feature for feature in problem.features if feature.numeric]
    if numeric:
        scaler = fitted.named_steps["prepare"].named_transformers_["numeric"].named_steps["scale"]
        values = scaler.inverse_transform(center[:len(numeric)].reshape(1, -1))[0]
        centroid.update({feature.column: _metric(v) for feature, v in zip(numeric, values)})
    position = len(numeric)
    for feature in problem.features[len(numeric):]:
        shares = center[position:position + len(feature.categories)]
        centroid[feature.column] = {_label(c): _metric(s) for c, s in zip(feature.categories,
                                                                            shares)}
        position += len(feature.categories)
    return centroid


def _predictions(problem: Problem, payload: dict[str, Any], fitted: Any,
                 classes: list[Cell] | None, cluster_order: list[int] | None) -> dict[str, Any]:
    if payload.get("predict") is None:
        return {}
    table = read_table(payload["predict"], "predict")
    missing = [f.column for f in problem.features if f.column not in table.columns]
    if missing:
        raise invalid(f"predict rows lack feature column {missing[0]!r}; the model was trained "
                      f"on: {', '.join(repr(f.column) for f in problem.features)}",
                      field="predict", column=missing[0])
    if not table.rows:
        return {"predictions": []}
    x = _matrix(problem.features, table.rows, table)
    unseen = sum(1 for f in problem.features if not f.numeric and OTHER not in f.categories
                 for row in table.rows if row[f.column] is not None
                 and cell_key(row[f.column]) not in f.codes)
    if unseen:
        problem.warnings.append(f"{unseen} predict cells hold categories unseen in training; "
                                "they were encoded as none of the known categories")
    predicted = fitted.predict(x).tolist()
    if cluster_order is not None:
        renumber = {old: new for new, old in enumerate(cluster_order)}
        return {"predictions": [renumber[label] for label in predicted]}
    if classes is None:
        return {"predictions": [_plain(value) for value in predicted]}
    probabilities = fitted.predict_proba(x)
    return {"predictions": [classes[label] for label in predicted],
            "probabilities": [[_metric(p) for p in row] for row in probabilities]}


def learn(payload: dict[str, Any], description: str = "") -> dict[str, Any]:
    """Fit, evaluate and predict: the agent's work, without the async shell."""
    problem = define_problem(payload, description)
    notes = problem.warnings
    with _captured(notes):
        x = _matrix(problem.features, problem.rows, problem.table)
        classes: list[Cell] | None = None
        order: list[int] | None = None
        if problem.task == "clustering":
            outcome, fitted, order = _cluster(problem, x)
        elif problem.task == "classification":
            evaluation, fitted, classes = _classify(problem, x)
            outcome = {"classes": classes, "evaluation": evaluation}
        else:
            evaluation, fitted = _regress(problem, x)
            outcome = {"evaluation": evaluation}
        outcome.update(_model_summary(problem, fitted))
        outcome.update(_predictions(problem, payload, fitted, classes, order))
        preprocessing = _preprocessing(problem, fitted)
    return {**problem.report(), "preprocessing": preprocessing, **outcome, "warnings": notes}


class Learning(Agent):
    """Classification, regression and clustering on tables, with honest evaluation."""

    spec = AgentSpec(
        name="learning",
        description="Trains machine-learning models on tabular data given as JSON rows or CSV: "
        "classification (logistic regression, random forest, k-nearest neighbours), regression "
        "(linear, ridge, random forest) and k-means clustering. Encodes categories, imputes "
        "missing values, cross-validates, and predicts new rows.",
        capabilities=(
            "train a classifier on a table and predict a category column",
            "fit a regression model to predict a numeric column",
            "cluster rows into groups with k-means",
            "cross-validate a model: accuracy, F1, precision, recall, R², MAE, RMSE",
            "predict labels or values for new rows with a trained model",
            "one-hot encode categorical features and impute missing values",
            "report feature importances and regression coefficients",
            "find which features or variables predict an outcome",
            "segment customers or items into groups by their attributes",
            "learn from labelled historical rows to label new ones",
        ),
        examples=(
            "Train a classifier to predict churn from this customer table",
            "Predict whether a loan defaults using the other columns",
            "Fit a regression model for house price",
            "Predict sales from advertising spend and report R²",
            "Forecast delivery time from distance and weight",
            "Cluster these customers into 4 segments",
            "Segment the stores by revenue and footfall",
            "Group these points with k-means and give me the centroids",
            "Which features matter most for predicting the species?",
            "Cross-validate a random forest on this dataset",
            "Use logistic regression to classify emails as spam or not",
            "Train a model on this CSV and predict the label for these new rows",
            "How accurate is a k-nearest-neighbours classifier on the iris data?",
            "Estimate the linear relationship between temperature and energy use",
            "Find natural groupings in this survey data",
            "Fit ridge regression and show the coefficients",
            "Learn from this table and predict the missing target values",
            "train a model on this data",
            "predict the target column",
            "predict y from x1 and x2",
            "regress price on size and age",
            "fit a linear regression",
            "what drives sales? fit a model and show the coefficients",
            "which factors best predict whether a customer leaves",
            "which features are the most predictive",
            "k-means clustering with k=4",
            "group these customers into segments",
            "cluster products by their ratings",
            "find clusters in this data",
            "classify these records using the labelled examples",
            "learn from past rows which orders get cancelled",
            "score new leads with a model trained on past conversions",
            "guess the category for the unlabelled rows",
            "predict values for the rows where the target is empty",
            "estimate the price of a house from its features",
            "what's the probability that a customer buys again? model it",
            "evaluate a random forest with 5-fold cross-validation",
            "compare logistic regression and random forest accuracy",
            "train a spam classifier from these labelled messages",
            "nearest-neighbours classifier on this table",
            "model how yield depends on temperature and rain",
            "predict whether each applicant will be approved",
            "identify the type of each flower from its measurements",
            "predict whether a flight will be delayed from the carrier, route and departure hour",
            "classify patients as high or low risk from their lab results",
            "predict final exam marks from coursework and attendance",
            "which factors predict that an employee quits? train a model on the HR table",
            "predict which parcels will arrive late from the carrier and distance",
            "group products into clusters by price, margin and sales volume",
            "train a fraud classifier on the labelled transactions",
            "predict machine failure from vibration and temperature readings",
            "cluster website visitors by session length and pages viewed",
            "predict the satisfaction score from the other survey answers",
            "predict rent from floor area, bedrooms and distance to the centre",
            "predict loan default from income, debt and credit history",
            "score leads by their probability of converting",
            "predict ticket resolution time from category and priority",
            "forecast electricity demand from temperature and day of week",
            "cluster films by genre and rating",
            "predict next month's revenue for each store from past sales",
            "predict the delivery rating of an order from its prep time and distance",
            "which variables influence the outcome the most? fit a model",
            "predict the label of each new row from the labelled ones",
            "forecast the value column from the other columns",
            "build a classifier and tell me how accurate it is",
            "discover groups of similar rows",
            "what's the expected value for these new rows according to a regression model",
            "which customers are likely to churn next month? use the history in this table",
            "work out which attributes matter for predicting a sale",
            "fit a model on these labelled rows and score the unlabelled ones",
            "forecast next week's demand from these features",
            "find segments in our user base",
            "how well does a random forest predict the outcome? cross-validate it",
            "predict house values and report the RMSE",
            "logistic regression: will the customer respond to the offer?",
            "classify the new animals below using the labelled measurements",
            "what's the relationship between advertising and sales? regression please",
        ),
        resources=Resources(num_cpus=0.5, memory_mb=1024, custom=dict(ML_RESOURCE)),
        concurrency=2,
        replicas=1,
        payload_hint={"task": "regression", "target": "price",
                      "rows": [{"size": 50, "rooms": 2, "price": 150},
                               {"size": 70, "rooms": 3, "price": 210},
                               {"size": 90, "rooms": 3, "price": 270},
                               {"size": 120, "rooms": 4, "price": 360}],
                      "predict": [{"size": 100, "rooms": 4}]},
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        # Fitting takes seconds of CPU: a thread keeps the replica's event loop answering.
        return await asyncio.to_thread(learn, task.payload, task.description or "")
