"""fusedrnn.keras.wrappers: scikit-learn's clone, cross_val_score, Pipeline and grid search
on the estimator wrappers; scores checked against sklearn's own metrics on the predictions."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

from fusedrnn.keras import layers, models, optimizers  # noqa: E402
from fusedrnn.keras.wrappers import SKLearnClassifier, SKLearnRegressor  # noqa: E402

T, F = 6, 2


def build_classifier(X, y, units=8):
    model = models.Sequential([layers.GRU(units), layers.Dense(len(np.unique(y)), activation="softmax")],
                              seed=0)
    model.compile(optimizers.Adam(learning_rate=0.02), "categorical_crossentropy", metrics=["accuracy"])
    return model


def build_regressor(X, y, units=8):
    model = models.Sequential([layers.LSTM(units), layers.Dense(1)], seed=0)
    model.compile(optimizers.Adam(learning_rate=0.03), "mse")
    return model


def task(rng, n=90):
    X = rng.standard_normal((n, T, F)).astype(np.float32)
    labels = np.array(["neg", "pos"])[(X[:, :, 0].sum(axis=1) > 0).astype(int)]
    return X, labels, X[:, :, 1].sum(axis=1)


def test_classifier_clone_fit_predict_score(rng):
    X, labels, _ = task(rng)
    clf = SKLearnClassifier(build_classifier, model_kwargs={"units": 6},
                            fit_kwargs={"epochs": 15, "batch_size": 16})
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "model_")
    twin.set_params(model_kwargs={"units": 4})
    assert twin.model_kwargs == {"units": 4}
    clf.fit(X[:60], labels[:60])
    pred = clf.predict(X[60:])
    assert set(pred) <= {"neg", "pos"}
    assert clf.score(X[60:], labels[60:]) == accuracy_score(labels[60:], pred)
    assert clf.score(X[60:], labels[60:]) > 0.75
    np.testing.assert_allclose(clf.predict_proba(X[60:]).sum(axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="not fitted yet"):
        clone(clf).predict(X)


def test_cross_val_score_and_grid_search(rng):
    X, labels, target = task(rng)
    reg = SKLearnRegressor(build_regressor, fit_kwargs={"epochs": 20, "batch_size": 16})
    scores = cross_val_score(reg, X, target, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)
    search = GridSearchCV(SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 5}),
                          {"model_kwargs": [{"units": 2}, {"units": 6}]}, cv=2)
    search.fit(X, labels)
    assert search.best_params_["model_kwargs"] in ({"units": 2}, {"units": 6})


def test_pipeline_with_a_scaler(rng):
    X, _, target = task(rng)
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("as_sequences", FunctionTransformer(lambda flat: flat.reshape(len(flat), T, F))),
        ("rnn", SKLearnRegressor(build_regressor, fit_kwargs={"epochs": 20, "batch_size": 16})),
    ])
    flat = X.reshape(len(X), -1)
    pipe.fit(flat[:60], target[:60])
    pred = pipe.predict(flat[60:])
    assert pred.shape == (30,)
    assert pipe.score(flat[60:], target[60:]) == pytest.approx(r2_score(target[60:], pred))
    assert pipe.score(flat[60:], target[60:]) > 0.5
