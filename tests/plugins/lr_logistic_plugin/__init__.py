"""A third-party correctness predictor, installed from outside lm-router-plugin: one
scikit-learn logistic regression per model on the embeddings. The tests put this folder on
the path; the dist-info beside it declares the entry point, as ``pip install`` would:

    [lm_router.predictors]
    logistic = lr_logistic_plugin:LogisticPredictor
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from lm_router_plugin.router.predictors import CorrectnessPredictor


class LogisticPredictor(CorrectnessPredictor):
    """g_m(x) = sigmoid(w_m . x + b_m); a model whose labels are all equal gets their mean."""

    def __init__(self, C: float = 1.0, max_iter: int = 500):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, Y):
        self.X_, self.Y_ = X, np.asarray(Y, dtype=float)
        self.per_model_ = []
        for m in range(self.Y_.shape[1]):
            has = ~np.isnan(self.Y_[:, m])
            y = self.Y_[has, m]
            if len(np.unique(y)) < 2:
                self.per_model_.append(float(y.mean()) if len(y) else 0.5)
            else:
                self.per_model_.append(LogisticRegression(C=self.C, max_iter=self.max_iter)
                                       .fit(X[has], y.astype(int)))
        return self

    def predict_proba(self, Q):
        self._check_fitted()
        return np.column_stack([np.full(len(Q), c) if isinstance(c, float)
                                else c.predict_proba(Q)[:, 1] for c in self.per_model_])
