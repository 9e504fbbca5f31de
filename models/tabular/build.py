"""Build the shipped tabular examples, the "regular Python models" scenario: scikit-learn
pipelines fitted on data sets that ship inside the scikit-learn package (nothing is
downloaded), converted by `models/tools/sklearn_onnx.py`.

- `breast-cancer`: StandardScaler + GradientBoostingClassifier on the Wisconsin breast-cancer
  data (30 numbers a record; classes `malignant`, `benign`).
- `diabetes`: a random forest regressor of disease progression a year on (10 numbers).
- `diabetes-risk`: a `ColumnTransformer` pipeline on the raw diabetes table with two string
  columns, `sex` ("1" or "2", as the data codes it) and `bmi_band` (the WHO band of the body
  mass index), one-hot encoded, and the numbers imputed (median) and scaled, into a logistic
  regression of whether progression is above the median (`high`, `low`). Missing values are
  allowed for `bp` and `s6`, which the imputer fills.
- `iris-svm`: StandardScaler + SVC on the iris data. Its `SVMClassifier` is an operator
  tract lacks, so it shows what `--backend auto` does with such a graph (ONNX Runtime, and why);
  not in spin.toml, which serves on tract by default.

For each, `models/<name>/holdout.json` keeps the held-out records with scikit-learn's own
`predict` and `predict_proba` (or `predict` for the regressor), which the tests compare
Scoria's answers with, and `pipeline.joblib` the fitted pipeline, which the benchmark's
Python server (`bench/peers/sklearn_flask.py`) serves.

Usage: build.py <models-dir>
"""

import json
import os
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import sklearn_onnx  # noqa: E402

SKLEARN = f"scikit-learn {__import__('sklearn').__version__}"


def holdout(out, model, X, classifier, names=None):
    """Write the held-out records with scikit-learn's answers; `names` are the card's labels
    for classes that are codes (0, 1, ...)."""
    # The fitted pipeline itself, for the Python server the benchmark compares with.
    joblib.dump(model, os.path.join(out, "pipeline.joblib"))
    records = X.to_dict(orient="records")
    fixture = {"records": records}
    if classifier:
        fixture["predict"] = [names[int(c)] if names else str(c) for c in model.predict(X)]
        fixture["predict_proba"] = model.predict_proba(X).tolist()
    else:
        fixture["predict"] = model.predict(X).tolist()
    with open(os.path.join(out, "holdout.json"), "w") as f:
        json.dump(fixture, f)


def breast_cancer(root):
    d = load_breast_cancer(as_frame=True)
    X_train, X_test, y_train, _ = train_test_split(d.data, d.target, test_size=0.25, random_state=0)
    model = Pipeline([("scale", StandardScaler()), ("boost", GradientBoostingClassifier(random_state=0))])
    model.fit(X_train, y_train)
    out = os.path.join(root, "breast-cancer")
    names = list(d.target_names)
    sklearn_onnx.export(
        model, out, features=list(d.feature_names), class_names=names,
        description="Breast-cancer diagnosis from 30 cell-nucleus measurements (StandardScaler + GradientBoostingClassifier)",
        source=f"models/tabular/build.py: fitted on load_breast_cancer ({SKLEARN}), converted by skl2onnx",
        licence="CC-BY-4.0",
    )
    holdout(out, model, X_test, True, names)


def diabetes(root):
    d = load_diabetes(as_frame=True)
    X_train, X_test, y_train, _ = train_test_split(d.data, d.target, test_size=0.25, random_state=0)
    model = RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0).fit(X_train, y_train)
    out = os.path.join(root, "diabetes")
    sklearn_onnx.export(
        model, out, features=list(d.feature_names),
        description="Diabetes progression one year on, from 10 baseline measurements (RandomForestRegressor)",
        source=f"models/tabular/build.py: fitted on load_diabetes ({SKLEARN}), converted by skl2onnx",
        licence="BSD-3-Clause",
    )
    holdout(out, model, X_test, False)


def bmi_band(bmi):
    return np.select([bmi < 18.5, bmi < 25, bmi < 30], ["underweight", "normal", "overweight"], "obese")


def diabetes_risk(root):
    d = load_diabetes(as_frame=True, scaled=False)
    X = d.data.copy()
    X["sex"] = X["sex"].astype(int).astype(str)
    X["bmi_band"] = bmi_band(X["bmi"].to_numpy())
    X = X.drop(columns=["bmi"])
    y = np.where(d.target > np.median(d.target), "high", "low")
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)
    categorical = ["sex", "bmi_band"]
    numeric = [c for c in X.columns if c not in categorical]
    prep = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
    ])
    model = Pipeline([("prep", prep), ("classify", LogisticRegression(max_iter=1000))]).fit(X_train, y_train)
    out = os.path.join(root, "diabetes-risk")
    sklearn_onnx.export(
        model, out, features=list(X.columns), categorical=categorical, allow_missing=["bp", "s6"],
        description="Whether diabetes progresses more than the median in a year (one-hot categories, imputed and scaled numbers, LogisticRegression)",
        source=f"models/tabular/build.py: fitted on load_diabetes(scaled=False) ({SKLEARN}) with derived categories, converted by skl2onnx",
        licence="BSD-3-Clause",
    )
    holdout(out, model, X_test, True)


def iris_svm(root):
    d = load_iris(as_frame=True)
    X_train, X_test, y_train, _ = train_test_split(d.data, d.target, test_size=0.3, random_state=0)
    # SVC's own probabilities (Platt scaling) are deprecated in scikit-learn 1.9 and still
    # what SVC users have; their warnings say so and change nothing here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    model = Pipeline([("scale", StandardScaler()), ("svm", SVC(probability=True, random_state=0))])
    model.fit(X_train, y_train)
    out = os.path.join(root, "iris-svm")
    names = list(d.target_names)
    sklearn_onnx.export(
        model, out, features=list(d.feature_names), class_names=names,
        description="Iris species from four measurements (StandardScaler + SVC); its SVMClassifier runs on ONNX Runtime only",
        source=f"models/tabular/build.py: fitted on load_iris ({SKLEARN}), converted by skl2onnx",
        licence="CC-BY-4.0",
    )
    holdout(out, model, X_test, True, names)


def main():
    root = sys.argv[1]
    breast_cancer(root)
    diabetes(root)
    diabetes_risk(root)
    iris_svm(root)


if __name__ == "__main__":
    main()
