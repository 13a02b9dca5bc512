"""scikit-learn estimators around a model-building function, as Keras 3's keras.wrappers:

    def build(X, y, units=16):
        model = Sequential([LSTM(units), Dense(len(np.unique(y)), activation="softmax")])
        model.compile("adam", "categorical_crossentropy")
        return model

    clf = SKLearnClassifier(build, model_kwargs={"units": 32}, fit_kwargs={"epochs": 10})
    cross_val_score(clf, X, y, cv=3)        # clone, Pipeline and grid search work too

The classifier one-hot encodes the classes for the model (a softmax output with
categorical cross-entropy) and returns the original labels from predict; the regressor passes
y through (as (N, 1) when it is (N,)).  X may be (N, T, F) sequences.  Needs scikit-learn.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fusedrnn.keras.wrappers needs scikit-learn: pip install scikit-learn") from exc

__all__ = ["SKLearnClassifier", "SKLearnRegressor"]


class _Wrapper(BaseEstimator):
    def __init__(self, model, warm_start=False, model_kwargs=None, fit_kwargs=None):
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs

    def _fit_model(self, X, y, encoded):
        if not callable(self.model):
            raise TypeError(f"model must be a function (X, y, **model_kwargs) -> compiled model, "
                            f"got {type(self.model).__name__}")
        if not (self.warm_start and hasattr(self, "model_")):
            self.model_ = self.model(X, y, **(self.model_kwargs or {}))
            if getattr(self.model_, "loss", None) is None:
                raise ValueError("the model function must return a compiled model")
        kwargs = {"verbose": 0, **(self.fit_kwargs or {})}
        self.history_ = self.model_.fit(X, encoded, **kwargs)
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit first")


class SKLearnClassifier(ClassifierMixin, _Wrapper):
    """A classifier: predict gives labels, predict_proba the model's probabilities."""

    def fit(self, X, y):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be one label per sample, shape (N,), got {y.shape}")
        self.classes_, ids = np.unique(y, return_inverse=True)
        onehot = np.eye(len(self.classes_), dtype=np.float32)[ids]
        return self._fit_model(X, y, onehot)

    def predict_proba(self, X):
        self._check_fitted()
        return self.model_.predict(X)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=-1)]


class SKLearnRegressor(RegressorMixin, _Wrapper):
    """A regressor: predict has y's shape ((N,) when fitted with (N,))."""

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        self.n_outputs_1d_ = y.ndim == 1
        return self._fit_model(X, y, y[:, None] if y.ndim == 1 else y)

    def predict(self, X):
        self._check_fitted()
        out = self.model_.predict(X)
        return out[:, 0] if self.n_outputs_1d_ else out
