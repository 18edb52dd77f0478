"""A low-rank item-response (IRT) correctness model over (model, doc) whose doc parameters
are predicted from the docs' embeddings (beyond the paper; issue 19).

The model (a multidimensional 2PL with a model intercept)::

    logit P(y_jm = 1)  =  c_m + a_j . theta_m - b_j          a_j, theta_m in R^r

c_m is model m's overall ability, theta_m its r skill loadings, b_j the difficulty of doc j
and a_j its r discriminations. :func:`fit_irt` fits it by L2-regularised maximum likelihood
(MAP with N(0, 1) priors on theta, a, b; a weak one on c) on the reference correctness Y
(n, M) with nans (missing results are skipped), by L-BFGS with the exact gradient, from a
seeded start: deterministic.

A new doc has no outcomes: its parameters (a_j, b_j) are predicted from its embedding by a
ridge regression fitted on the reference docs' fitted parameters (:class:`DocRegression`;
measured against a kNN average of neighbours' parameters in docs/irt.md). What the
embedding does not tell is modelled as two random effects on the logits of a new task:

* a **task effect** e (r + 1,): the task's docs are all shifted by delta_a (r,) and delta_b,
  so logit += e . [theta_m, -1]: one shift moves every candidate, through its theta;
* a **doc residual** (r + 1,) per doc, N(0, Sigma_doc): integrated out for unlabelled docs
  by the probit approximation E sigmoid(x) ~ sigmoid(mu / sqrt(1 + pi v / 8)), kept
  explicit for labelled docs (their M outcomes share it);
* a **model-task effect** eps_m ~ N(0, s_eps^2) per candidate: what rank r does not explain.

Sigma_task, Sigma_doc and s_eps^2 are estimated on the reference tasks, each with doc
parameters predicted by a regression fitted without its task (leave-one-task-out), see
:func:`fit_reference`. With L labelled docs (each with the outcome of every candidate), the
posterior of (e, eps, the labelled docs' residuals) is found by Newton's method (MAP) and
approximated by a Gaussian (Laplace); every candidate's task accuracy on the unlabelled
docs, mean_j P_jm, moves with e at once. Intervals: the Laplace covariance pushed through
the accuracy by the delta method (normal approximation), plus the docs' own Bernoulli noise
(predictive for the accuracy on the task's docs). Theta, c and the regression are taken as
known (12k docs x 29 models pin them far better than the task effects).

The rank r (IRT_RANKS) and the ridge strength are chosen by an inner leave-one-task-out on
the reference tasks (the squared error of predicted task accuracies), not fixed by hand.

    >>> ref = fit_reference(X, Y, task_of, seed=0)                 # IRTReference
    >>> est = ref.estimate(Q_rest, Q_lab=Q_lab, y_lab=y_lab)        # IRTEstimate
    >>> est.mean, est.interval(0.9), est.p_beats(best, bma)
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit, log_expit

from .deciders import Decider, Decision, TaskView
from .predictors import CorrectnessPredictor

#: ranks the inner leave-one-task-out chooses from
IRT_RANKS = (1, 2)
#: ridge strengths (on unit-norm embeddings) of the embedding -> doc-parameter regression
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0)
PRIOR_PRECISION = 1.0  # N(0, 1) priors on theta, a, b
INTERCEPT_PRECISION = 1e-2  # a weak prior on the model intercepts c
MAX_ITER = 30
VAR_FLOOR = 1e-6
PI_8 = math.pi / 8.0


# -- the fit ------------------------------------------------------------------------------
@dataclass
class IRTFit:
    """Fitted parameters. c (M,), theta (M, r), a (n, r), b (n,); loss the final objective
    (mean negative log-likelihood per outcome + penalties / n_outcomes); n_iter."""

    c: np.ndarray
    theta: np.ndarray
    a: np.ndarray
    b: np.ndarray
    loss: float = math.nan
    n_iter: int = 0

    @property
    def rank(self) -> int:
        return self.theta.shape[1]

    def logits(self) -> np.ndarray:
        """(n, M) fitted logits of the reference docs."""
        return self.c[None, :] + self.a @ self.theta.T - self.b[:, None]

    def doc_params(self) -> np.ndarray:
        """(n, r + 1) [a_j, b_j] per doc."""
        return np.column_stack([self.a, self.b])


def _newton_block(U: np.ndarray, F: np.ndarray, offset: np.ndarray, y: np.ndarray,
                  w: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """One Newton step for every row's parameters u_i (rows independent): logit z_ik =
    offset_ik + u_i . F_k, L2 precision ``prec`` (p,). U (N, p), F (K, p), offset/y/w (N, K).
    The step is capped at 1 per coordinate (far from the optimum the quadratic model of a
    logistic loss overshoots)."""
    z = offset + U @ F.T
    p = expit(z)
    r_ = w * (p - y)
    s = w * p * (1.0 - p)
    k = F.shape[1]
    grad = r_ @ F + prec[None, :] * U
    H = (s @ (F[:, :, None] * F[:, None, :]).reshape(len(F), k * k)).reshape(-1, k, k)
    H += np.diag(prec)[None]
    step = np.linalg.solve(H, grad[..., None])[..., 0]
    return U - np.clip(step, -1.0, 1.0)


def _objective(c, theta, a, b, y, w) -> float:
    z = c[None, :] + a @ theta.T - b[:, None]
    nll = -np.sum(w * np.where(y > 0.5, log_expit(z), log_expit(-z)))
    pen = 0.5 * (INTERCEPT_PRECISION * c @ c
                 + PRIOR_PRECISION * (np.sum(theta**2) + np.sum(a**2) + b @ b))
    return float(nll + pen)


def _svd_start(y: np.ndarray, w: np.ndarray, rank: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic start near the optimum: logits of the smoothed model and doc means
    (c, b) and the top-r singular vectors of the doubly centred outcome table (theta, a);
    ``seed`` only breaks exact ties of the singular vectors' signs (none in practice)."""
    n, M = y.shape
    doc_mean = (y.sum(1) + 0.5) / (w.sum(1) + 1.0)
    mod_mean = (y.sum(0) + 0.5) / (w.sum(0) + 1.0)
    c = np.log(mod_mean / (1 - mod_mean))
    lo = np.log(doc_mean / (1 - doc_mean))
    b = -(lo - lo.mean())
    filled = np.where(w > 0, y, mod_mean[None, :])
    R = filled - filled.mean(0, keepdims=True) - filled.mean(1, keepdims=True) + filled.mean()
    k = min(rank, M - 1, n - 1)
    _, sv, Vt = np.linalg.svd(R.T @ R)  # (M, M): cheap for any n
    theta = np.zeros((M, rank))
    theta[:, :k] = Vt[:k].T * 2.0
    signs = np.where(theta.sum(0) < 0, -1.0, 1.0)  # a fixed orientation
    theta *= signs
    a = (R @ theta) / max(float(np.sqrt(sv[0])), 1e-9) if k else np.zeros((n, rank))
    a = a / max(float(np.abs(a).max()), 1e-9)
    return c, theta, a, b


def fit_irt(Y: np.ndarray, rank: int, *, seed: int = 0, init: IRTFit | None = None,
            max_iter: int = MAX_ITER, tol: float = 1e-3,
            doc_weight: np.ndarray | None = None) -> IRTFit:
    """MAP fit of the low-rank IRT model on Y (n, M) in {0, 1, nan}.

    Priors N(0, 1) on theta, a, b and N(0, 100) on c (L2 penalties); missing outcomes are
    skipped. Block-coordinate Newton: all docs' (a_j, b_j) given the models, then all
    models' (c_m, theta_m) given the docs (each block a set of independent (r+1)-dim
    logistic regressions), until no parameter moves by more than ``tol`` in an iteration.
    ``init`` warm-starts from an earlier fit of the same rank (rows taken by position:
    pass one restricted to the same docs). ``doc_weight`` (n,): weights of the docs'
    outcomes in the models' step (fit_reference weighs each task equally, so the models'
    abilities are task averages like the best model on average; the docs' own parameters
    are fitted unweighted). Deterministic for a given seed.
    """
    Y = np.asarray(Y, dtype=float)
    n, M = Y.shape
    has = ~np.isnan(Y)
    y = np.where(has, Y, 0.0)
    w = has.astype(float)
    if init is None:
        c, theta, a, b = _svd_start(y, w, rank, seed)
    else:
        c, theta, a, b = (np.array(init.c, float), np.array(init.theta, float),
                          np.array(init.a, float), np.array(init.b, float))
    wm = w if doc_weight is None else w * np.asarray(doc_weight, float)[:, None]
    doc_prec = np.full(rank + 1, PRIOR_PRECISION)
    mod_prec = np.r_[INTERCEPT_PRECISION, np.full(rank, PRIOR_PRECISION)]
    it = 0
    for it in range(1, max_iter + 1):
        # docs: u_j = [a_j, b_j], features [theta_m, -1], offset c_m
        U0 = np.column_stack([a, b])
        U = _newton_block(U0, np.column_stack([theta, -np.ones(M)]),
                          np.broadcast_to(c[None, :], (n, M)), y, w, doc_prec)
        a, b = U[:, :rank], U[:, rank]
        # models: v_m = [c_m, theta_m], features [1, a_j], offset -b_j
        V0 = np.column_stack([c, theta])
        V = _newton_block(V0, np.column_stack([np.ones(n), a]),
                          np.broadcast_to(-b[None, :], (M, n)), y.T, wm.T, mod_prec)
        c, theta = V[:, 0], V[:, 1:]
        if max(np.abs(U - U0).max(), np.abs(V - V0).max()) < tol:
            break
    loss = _objective(c, theta, a, b, y, w)
    n_obs = max(float(w.sum()), 1.0)
    return IRTFit(c=c, theta=theta, a=a, b=b, loss=loss / n_obs, n_iter=it)


# -- doc parameters from embeddings --------------------------------------------------------
#: principal components of the embeddings the ridge regression works in (a 64-dim solve per
#: left-out task keeps the inner leave-one-task-out cheap)
N_COMPONENTS = 64


@dataclass
class DocRegression:
    """Ridge regression from embeddings to doc parameters [a_j, b_j] (r + 1 columns), in
    the top N_COMPONENTS principal components of the reference embeddings (with intercept).
    basis (dim, k), x_mean (dim,), coef (k + 1, r + 1)."""

    basis: np.ndarray
    x_mean: np.ndarray
    coef: np.ndarray

    def features(self, Q: np.ndarray) -> np.ndarray:
        Z = (np.asarray(Q, dtype=float) - self.x_mean) @ self.basis
        return np.column_stack([np.ones(len(Z)), Z])

    def predict(self, Q: np.ndarray) -> np.ndarray:
        """(n_q, dim) embeddings -> (n_q, r + 1) predicted [a, b]."""
        return self.features(Q) @ self.coef


def pca_basis(X: np.ndarray, k: int = N_COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """(basis (dim, k'), mean (dim,)): the top principal directions of X (n, dim)."""
    X = np.asarray(X, dtype=float)
    mean = X.mean(0)
    C = (X - mean).T @ (X - mean)
    vals, vecs = np.linalg.eigh(C)
    order = np.argsort(vals)[::-1][:min(k, X.shape[1], max(len(X) - 1, 1))]
    basis = vecs[:, order]
    # a fixed sign per direction (eigh's signs are arbitrary across platforms)
    basis *= np.where(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])] < 0, -1, 1)
    return basis, mean


def _ridge_solve(xtx: np.ndarray, xty: np.ndarray, alpha: float) -> np.ndarray:
    pen = alpha * np.eye(len(xtx))
    pen[0, 0] = 1e-8  # the intercept is not shrunk
    return np.linalg.solve(xtx + pen, xty)


# -- the reference model: fit, random-effect variances, and estimates for a new task -------
@dataclass
class IRTEstimate:
    """Per-candidate task accuracy on the docs the choice is for. mean (M,); cov (M, M)
    of the estimate (Laplace + delta method) plus the docs' own Bernoulli noise (diagonal),
    so intervals are predictive for the accuracy on these docs; n_labels."""

    mean: np.ndarray
    cov: np.ndarray
    n_labels: int = 0

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    def interval(self, level: float = 0.9) -> np.ndarray:
        """(M, 2) normal-approximation interval, clipped to [0, 1]."""
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2.0))
        return np.clip(np.column_stack([self.mean - z * self.sd, self.mean + z * self.sd]),
                       0.0, 1.0)

    def p_beats(self, i: int, j: int) -> float:
        """P(accuracy of i > accuracy of j) under the normal approximation (paired: the
        covariance of the two)."""
        from .scores import normal_cdf

        if i == j:
            return 0.5
        var = self.cov[i, i] + self.cov[j, j] - 2.0 * self.cov[i, j]
        return normal_cdf(float(self.mean[i] - self.mean[j]) / math.sqrt(max(var, VAR_FLOOR)))


@dataclass
class IRTReference:
    """The IRT model of a reference pool, ready to estimate new tasks.

    fit: the IRTFit (rank chosen by inner LOTO); reg: embedding -> doc parameters;
    task_cov (r + 1, r + 1): covariance of the task effects e; doc_cov (r + 1, r + 1):
    covariance of a doc's residual parameters; eps_var: variance of the model-task effect;
    inner: per rank, the inner-LOTO error of task accuracies (mean squared, accuracy^2);
    loto: what the inner leave-one-task-out predicted for each reference task, for deciders
    that learn a rule on it (``loto_mu`` (n, M) zero-label logits of every reference doc
    from a regression without its task; ``task_of``; ``Y``).
    """

    fit: IRTFit
    reg: DocRegression
    task_cov: np.ndarray
    doc_cov: np.ndarray
    eps_var: float
    inner: dict = field(default_factory=dict)
    loto_mu: np.ndarray | None = None
    task_of: np.ndarray | None = None
    Y: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return self.fit.rank

    @property
    def F(self) -> np.ndarray:
        """(M, r + 1) [theta_m, -1]: how a shift of (a, b) moves model m's logit."""
        return np.column_stack([self.fit.theta, -np.ones(len(self.fit.c))])

    def mu(self, Q: np.ndarray) -> np.ndarray:
        """(n, M) zero-label logits of docs with embeddings Q (n, dim)."""
        params = self.reg.predict(Q)
        return self.fit.c[None, :] + params @ self.F.T

    def doc_var(self) -> np.ndarray:
        """(M,) logit variance of a doc's residual parameters for each model."""
        F = self.F
        return np.einsum("mk,kl,ml->m", F, self.doc_cov, F)

    def estimate(self, Q: np.ndarray | None = None, *, mu: np.ndarray | None = None,
                 Q_lab: np.ndarray | None = None, mu_lab: np.ndarray | None = None,
                 y_lab: np.ndarray | None = None) -> IRTEstimate:
        """Task accuracies of every model on the docs Q (n, dim) (or their logits ``mu``
        (n, M)), after the labelled docs Q_lab (L, dim) (or ``mu_lab``) with outcomes y_lab
        (L, M) (nan: no result) update the task effects."""
        mu = self.mu(Q) if mu is None else np.asarray(mu, float)
        if y_lab is not None and len(y_lab):
            mu_lab = self.mu(Q_lab) if mu_lab is None else np.asarray(mu_lab, float)
            post_mean, post_cov = self.posterior(mu_lab, np.asarray(y_lab, float))
            n_lab = len(y_lab)
        else:
            post_mean, post_cov, n_lab = None, None, 0
        return self._accuracy(mu, post_mean, post_cov, n_lab)

    def _prior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, cov) of the task-level effects phi = [e (r+1), eps (M)]."""
        M, k = len(self.fit.c), self.rank + 1
        cov = np.zeros((k + M, k + M))
        cov[:k, :k] = self.task_cov
        cov[k:, k:] = np.eye(M) * self.eps_var
        return np.zeros(k + M), cov

    def _G(self) -> np.ndarray:
        """(M, r + 1 + M): how phi moves each model's logit."""
        M = len(self.fit.c)
        return np.column_stack([self.F, np.eye(M)])

    def posterior(self, mu_lab: np.ndarray, y_lab: np.ndarray, n_newton: int = 25
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Laplace posterior (mean, cov) of phi = [e, eps] from L labelled docs: logits
        mu_lab (L, M) + G phi + F d_j with each doc's residual d_j ~ N(0, doc_cov) kept
        explicit (a doc's M outcomes share it), found by Newton's method on the joint MAP;
        the covariance is the phi-block of the inverse Hessian (the docs' residuals
        integrated out under the Gaussian approximation)."""
        L = len(y_lab)
        k = self.rank + 1
        G, F = self._G(), self.F
        _, prior_cov = self._prior()
        P_phi = np.linalg.pinv(prior_cov)  # a zero variance: a fixed effect at 0
        P_doc = np.linalg.pinv(self.doc_cov)
        has = ~np.isnan(y_lab)
        y = np.where(has, y_lab, 0.0)
        w = has.astype(float)
        phi, D = np.zeros(G.shape[1]), np.zeros((L, k))
        FF = F[:, :, None] * F[:, None, :]  # (M, k, k)

        def objective(phi, D):
            z = mu_lab + (G @ phi)[None, :] + D @ F.T
            nll = -np.sum(w * np.where(y > 0.5, log_expit(z), log_expit(-z)))
            return nll + 0.5 * (phi @ P_phi @ phi + np.einsum("jk,kl,jl->", D, P_doc, D))

        current = objective(phi, D)
        for _ in range(n_newton):
            z = mu_lab + (G @ phi)[None, :] + D @ F.T
            p = expit(z)
            r_ = w * (p - y)
            s = w * p * (1 - p)
            g_phi = G.T @ r_.sum(0) + P_phi @ phi
            g_doc = r_ @ F + D @ P_doc  # (L, k)
            H_pp = (G.T * s.sum(0)) @ G + P_phi
            H_dd = np.einsum("jm,mkl->jkl", s, FF) + P_doc[None]  # (L, k, k) blocks
            H_pd = np.einsum("jm,mi,mk->jik", s, G, F)  # (L, nphi, k)
            # Schur complement: the doc blocks are block-diagonal
            inv_dd = np.linalg.inv(H_dd)
            A = np.einsum("jik,jkl->jil", H_pd, inv_dd)  # H_pd H_dd^-1
            S = H_pp - np.einsum("jil,jml->im", A, H_pd)
            rhs = g_phi - np.einsum("jil,jl->i", A, g_doc)
            d_phi = np.linalg.solve(S, rhs)
            d_doc = np.einsum("jkl,jl->jk", inv_dd,
                              g_doc - np.einsum("jik,i->jk", H_pd, d_phi))
            # backtracking: a full Newton step on a logistic likelihood can overshoot where
            # the labels sit in the flat tails of the sigmoid
            t = 1.0
            while True:
                trial = objective(phi - t * d_phi, D - t * d_doc)
                if trial <= current + 1e-12 or t < 1e-4:
                    break
                t *= 0.5
            phi, D, current = phi - t * d_phi, D - t * d_doc, trial
            if t * max(np.abs(d_phi).max(), np.abs(d_doc).max(initial=0.0)) < 1e-6:
                break
        cov = np.linalg.inv(S)  # the phi block of the inverse Hessian
        return phi, (cov + cov.T) / 2

    def _accuracy(self, mu: np.ndarray, post_mean: np.ndarray | None,
                  post_cov: np.ndarray | None, n_lab: int) -> IRTEstimate:
        """Mean over docs of E[sigmoid(logit)] per model, the probit approximation over the
        doc residual and the task-level effects' (prior or posterior) covariance; the
        covariance of the accuracies by the delta method plus the docs' Bernoulli noise."""
        mean_phi, cov_phi = self._prior()
        if post_mean is not None:
            mean_phi, cov_phi = post_mean, post_cov
        G = self._G()
        shift = G @ mean_phi  # (M,)
        v_task = np.einsum("mi,ij,mj->m", G, cov_phi, G)
        v_doc = self.doc_var()
        z = mu + shift[None, :]
        kappa = 1.0 / np.sqrt(1.0 + PI_8 * (v_doc + v_task))
        p = expit(z * kappa[None, :])
        acc = p.mean(0)
        # delta method: d acc_m / d phi = mean_j p(1-p) kappa_m G_m
        slope = (p * (1 - p)).mean(0) * kappa  # (M,)
        J = slope[:, None] * G
        cov = J @ cov_phi @ J.T
        n = max(len(mu), 1)
        # the docs' own noise: the accuracy on these docs is a mean of n Bernoulli outcomes
        cov = cov + np.diag((p * (1 - p)).sum(0) / n**2)
        return IRTEstimate(mean=acc, cov=cov, n_labels=n_lab)


def _accuracy_shift(mu: np.ndarray, v: np.ndarray, acc: np.ndarray, n_iter: int = 30
                    ) -> np.ndarray:
    """(M,) logit shift s_m with mean_j sigmoid((mu_jm + s_m) kappa_m) = acc_m (Newton;
    accuracies clipped away from 0 and 1). mu (n, M), v (M,) doc variances, acc (M,)."""
    kappa = 1.0 / np.sqrt(1.0 + PI_8 * v)
    n = len(mu)
    target = np.clip(acc, 0.5 / n, 1 - 0.5 / n)
    s = np.zeros(mu.shape[1])
    for _ in range(n_iter):
        p = expit((mu + s) * kappa)
        f = p.mean(0) - target
        d = (p * (1 - p)).mean(0) * kappa
        s = s - np.clip(f / np.maximum(d, 1e-9), -2.0, 2.0)
    return s


def fit_reference(X: np.ndarray, Y: np.ndarray, task_of: np.ndarray, *,
                  ranks: tuple[int, ...] = IRT_RANKS, alphas: tuple[float, ...] = RIDGE_ALPHAS,
                  seed: int = 0, max_iter: int = MAX_ITER) -> IRTReference:
    """Fit the IRT reference model on the pool X (n, dim), Y (n, M), task_of (n,).

    For each rank: fit the IRT model; for each reference task z, predict its docs'
    parameters with a ridge regression fitted without z (leave-one-task-out) and measure
    the squared error of the resulting task accuracies (zero labels). The rank and ridge
    strength of least error are kept (ties: the smaller rank, the stronger ridge). From
    that leave-one-task-out prediction: the task effects e_z (each task's per-model logit
    shift to its true accuracies, regressed on [theta_m, -1]), their covariance task_cov,
    the model-task residual variance eps_var, and the docs' residual covariance doc_cov
    (the fitted minus the predicted doc parameters, less their task means).
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    task_of = np.asarray(task_of)
    tasks = np.unique(task_of)
    if len(tasks) < 2:
        raise ValueError("the IRT reference model needs at least 2 reference tasks")
    basis, x_mean = pca_basis(X)
    Z = np.column_stack([np.ones(len(X)), (X - x_mean) @ basis])
    rows = [np.flatnonzero(task_of == t) for t in tasks]
    xtx = Z.T @ Z
    xtx_t = [Z[r].T @ Z[r] for r in rows]
    has = ~np.isnan(Y)
    acc = np.array([np.where(has[r], Y[r], 0).sum(0) / np.maximum(has[r].sum(0), 1)
                    for r in rows])  # (D, M)
    acc_ok = np.array([has[r].any(0) for r in rows])
    # each task weighs the same in the models' abilities (as in the best model on average)
    doc_weight = np.empty(len(Y))
    for r in rows:
        doc_weight[r] = len(Y) / (len(rows) * len(r))
    best = None
    inner = {}
    for rank in ranks:
        fit = fit_irt(Y, rank, seed=seed, max_iter=max_iter, doc_weight=doc_weight)
        T = fit.doc_params()
        xty = Z.T @ T
        xty_t = [Z[r].T @ T[r] for r in rows]
        F = np.column_stack([fit.theta, -np.ones(Y.shape[1])])
        for alpha in alphas:
            pred = np.empty_like(T)
            for i, r in enumerate(rows):
                coef = _ridge_solve(xtx - xtx_t[i], xty - xty_t[i], alpha)
                pred[r] = Z[r] @ coef
            mu = fit.c[None, :] + pred @ F.T
            resid = T - pred
            for r in rows:
                resid[r] -= resid[r].mean(0)
            doc_cov = np.cov(resid.T) if len(resid) > 1 else np.eye(rank + 1)
            v = np.einsum("mk,kl,ml->m", F, doc_cov, F)
            kappa = 1.0 / np.sqrt(1.0 + PI_8 * v)
            est = np.array([expit(mu[r] * kappa).mean(0) for r in rows])
            err = float(np.mean(((est - acc) ** 2)[acc_ok]))
            inner[(rank, alpha)] = err
            if best is None or err < best[0] - 1e-12:
                best = (err, fit, alpha, mu, pred, doc_cov, v)
    err, fit, alpha, mu, pred, doc_cov, v = best
    reg = DocRegression(basis=basis, x_mean=x_mean,
                        coef=_ridge_solve(xtx, Z.T @ fit.doc_params(), alpha))
    # task effects: each task's logit shift to its true accuracies, split into the part
    # along [theta_m, -1] (e_z) and a per-model residual (eps_zm)
    F = np.column_stack([fit.theta, -np.ones(Y.shape[1])])
    k = F.shape[1]
    E, resid = [], []
    for i, r in enumerate(rows):
        ok = acc_ok[i]
        s = _accuracy_shift(mu[r][:, ok], v[ok], acc[i, ok])
        Fo = F[ok]
        e = np.linalg.solve(Fo.T @ Fo + 1e-6 * np.eye(k), Fo.T @ s)
        E.append(e)
        resid.extend((s - Fo @ e).tolist())
        n_free = max(ok.sum() - k, 1)
        resid[-ok.sum():] = [x * math.sqrt(ok.sum() / n_free) for x in resid[-ok.sum():]]
    E = np.array(E)
    task_cov = (E.T @ E) / len(E)  # second moment: a mean shift counts as uncertainty
    eps_var = float(np.mean(np.square(resid))) if resid else 0.0
    return IRTReference(fit=fit, reg=reg, task_cov=task_cov, doc_cov=doc_cov,
                        eps_var=eps_var, inner={"rank": fit.rank, "alpha": alpha,
                                                "errors": inner},
                        loto_mu=mu.astype(np.float32), task_of=task_of,
                        Y=Y.astype(np.float32))


# -- the decision ---------------------------------------------------------------------------
#: thresholds on P(best beats BMA) the inner leave-one-task-out chooses from (inf: never)
ETAS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, math.inf)
LABEL_DRAWS = 2  # simulated label sets per reference task when fitting the rule


@dataclass
class IRTRule:
    """The switch of the IRT decider: keep the highest-estimate candidate if P(it beats
    BMA) > eta, else BMA. eta is the one of highest mean realised gain over the reference
    tasks (inner leave-one-task-out; ties: the larger eta), with as many labels drawn on
    each as the new task has. inner_gain (len(ETAS),) that mean gain per eta."""

    eta: float
    n_labels: int
    inner_gain: np.ndarray
    n_tasks: int

    def describe(self) -> str:
        if not math.isfinite(self.eta):
            return (f"switching away from the best model on average gained nothing "
                    f"leave-one-task-out over {self.n_tasks} reference tasks, so it never "
                    "switches")
        return (f"switches when P(beats the best model on average) > {self.eta:g}, a "
                f"threshold learned leave-one-task-out over {self.n_tasks} reference tasks")


def task_rows(task_of: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(task_of == t) for t in np.unique(task_of)]


def fit_rule(ref: IRTReference, allowed: np.ndarray, n_labels: int, seed: int = 0) -> IRTRule:
    """Fit eta on the reference tasks of ``ref`` for the candidates ``allowed`` (M,) and
    ``n_labels`` labelled docs. Each reference task z is decided as a new task: its docs'
    logits from the regression fitted without it (``ref.loto_mu``), its BMA from the other
    tasks' accuracies, its labels drawn at random (seeded by its rank and the count) and
    the gain scored on its other docs. theta and the random-effect variances come from the
    whole reference fit (a second-order leak inside the reference tasks only: the task
    being decided in an evaluation is never in ``ref``)."""
    from .scores import argmax_with_ties, quiet_nanmean

    rows = task_rows(ref.task_of)
    Y, mu = ref.Y, ref.loto_mu
    accs = np.array([quiet_nanmean(Y[r]) for r in rows])  # (D, M)
    has = ~np.isnan(accs)
    total, count = np.where(has, accs, 0).sum(0), has.sum(0)
    gains = np.zeros((len(rows), len(ETAS)))
    for i, r in enumerate(rows):
        rest_n = count - has[i]
        mean_other = np.divide(total - np.where(has[i], accs[i], 0), rest_n,
                               out=np.zeros(len(total)), where=rest_n > 0)
        ok = allowed & has[i]
        if not ok.any():
            continue
        bma = argmax_with_ties(np.where(ok, mean_other, -np.inf), mean_other)
        draws = [(np.empty(0, np.int64), r)]
        n = min(n_labels, len(r) - 1)
        if n_labels > 0 and n >= 1:
            rng = np.random.default_rng([seed, 7877, i, n_labels])
            draws = []
            for _ in range(LABEL_DRAWS):
                pick = np.sort(rng.choice(len(r), n, replace=False))
                draws.append((r[pick], np.delete(r, pick)))
        for lab, rest in draws:
            est = ref.estimate(mu=mu[rest], mu_lab=mu[lab] if len(lab) else None,
                               y_lab=Y[lab] if len(lab) else None)
            acc = quiet_nanmean(Y[rest])
            ok_r = ok & ~np.isnan(acc)
            if not ok_r[bma]:
                continue
            best = argmax_with_ties(np.where(ok_r, est.mean, -np.inf), mean_other)
            p = est.p_beats(best, bma)
            gain = float(acc[best] - acc[bma])
            gains[i] += np.array([gain if p > eta else 0.0 for eta in ETAS]) / len(draws)
    mean_gain = gains.mean(0)
    chosen = max(np.flatnonzero(mean_gain >= mean_gain.max() - 1e-12))
    return IRTRule(eta=ETAS[chosen], n_labels=n_labels, inner_gain=mean_gain,
                   n_tasks=len(rows))


#: fits by content (X, Y, task grouping, seed): evaluations of the same table with other
#: candidates (--candidates, --max-params) in one process reuse them; bounded
_FITS: OrderedDict[bytes, IRTReference] = OrderedDict()
MAX_CACHED_FITS = 256


def _content_key(X: np.ndarray, Y: np.ndarray, task_of: np.ndarray, *extra) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for a in (X, Y):
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.view(np.uint8).ravel())
    # the grouping, not the task numbers (a pool without a task renumbers nothing else)
    h.update(np.unique(np.asarray(task_of), return_inverse=True)[1].astype(np.int64).tobytes())
    h.update(repr(extra).encode())
    return h.digest()


def reference_model(data, max_iter: int = MAX_ITER) -> IRTReference:
    """The IRT reference model of a deciders.ReferenceData (fitted on first use, cached on
    it: an evaluation keeps one per held-out task, a router one for its pool; also kept by
    content for the process, so another candidate set of the same table refits nothing)."""
    key = ("irt", data.seed, max_iter)
    if key not in data.cache:
        X, Y, task_of = data.X, data.Y, data.task_of
        content = _content_key(X, Y, task_of, data.seed, max_iter, IRT_RANKS, RIDGE_ALPHAS)
        if content in _FITS:
            _FITS.move_to_end(content)
        else:
            _FITS[content] = fit_reference(X, Y, task_of, seed=data.seed, max_iter=max_iter)
            while len(_FITS) > MAX_CACHED_FITS:
                _FITS.popitem(last=False)
        data.cache[key] = _FITS[content]
    return data.cache[key]


def reference_rule(data, allowed: np.ndarray, n_labels: int) -> IRTRule:
    key = ("irt_rule", np.asarray(allowed, bool).tobytes(), int(n_labels), data.seed)
    if key not in data.cache:
        data.cache[key] = fit_rule(reference_model(data), allowed, n_labels, data.seed)
    return data.cache[key]


def informative_docs(ref: IRTReference, mu: np.ndarray, n: int, allowed: np.ndarray,
                     tie: np.ndarray, leaders: int = 4, seed: int = 0) -> np.ndarray:
    """The n docs (positions into mu (N, M)) whose outcomes tell most about which of the
    leading candidates is best: the ``leaders`` allowed models of highest zero-label
    estimate (and nothing else), each doc scored by the expected number of leader pairs
    whose outcomes differ on it, sum over pairs of P_m (1 - P_m') + P_m' (1 - P_m) with the
    model's per-doc probabilities; ties broken by a seeded permutation."""
    from .scores import argmax_with_ties

    est = ref._accuracy(mu, None, None, 0)
    order = [argmax_with_ties(np.where(allowed, est.mean, -np.inf), tie)]
    while len(order) < min(leaders, int(allowed.sum())):
        left = allowed.copy()
        left[order] = False
        order.append(argmax_with_ties(np.where(left, est.mean, -np.inf), tie))
    kappa = 1.0 / np.sqrt(1.0 + PI_8 * self_var(ref))
    P = expit(mu[:, order] * kappa[order])
    score = np.zeros(len(mu))
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            score += P[:, i] * (1 - P[:, j]) + P[:, j] * (1 - P[:, i])
    perm = np.random.default_rng([seed, 6151]).permutation(len(mu))
    ranked = perm[np.lexsort((np.arange(len(mu)), -score[perm]))]
    return np.sort(ranked[:n])


def self_var(ref: IRTReference) -> np.ndarray:
    """(M,) the zero-label logit variance of a new doc: its residual and the task effects."""
    G = ref._G()
    _, cov = ref._prior()
    return ref.doc_var() + np.einsum("mi,ij,mj->m", G, cov, G)


class IRTPredictor(CorrectnessPredictor):
    """g from the IRT reference model: P(y = 1) of each model on a new doc, its parameters
    predicted from its embedding, the doc residual and the task effects integrated out (the
    probit approximation). ``fit(X, Y)`` has no task groups, so the inner choice of rank
    and ridge strength runs over seeded random folds of the docs (``n_folds``); the
    leave-group-out predictions of calibration and evaluation refit it without each group
    (the base class: exact, one fit per group). Registered as ``irt``."""

    name = "irt"

    def __init__(self, n_folds: int = 5, seed: int = 0, max_iter: int = MAX_ITER):
        self.n_folds = n_folds
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, Y: np.ndarray) -> IRTPredictor:
        if int(self.n_folds) < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        self.X_ = np.asarray(X, dtype=np.float32)
        self.Y_ = np.asarray(Y, dtype=np.float32)
        folds = np.random.default_rng([self.seed, 3301]).permutation(len(X)) % self.n_folds
        self.ref_ = fit_reference(self.X_, self.Y_, folds, seed=self.seed,
                                  max_iter=self.max_iter)
        return self

    def predict_proba(self, Q: np.ndarray) -> np.ndarray:
        self._check_fitted()
        mu = self.ref_.mu(np.asarray(Q, dtype=float))
        kappa = 1.0 / np.sqrt(1.0 + PI_8 * self_var(self.ref_))
        return expit(mu * kappa[None, :])


class IRTDecider(Decider):
    """The IRT decision (irt.py; ours): every candidate's task accuracy estimated by the
    IRT reference model fitted on the view's reference pool (``view.reference()``), the
    labelled docs updating the task effects and so every candidate at once; the candidate
    of highest estimate is chosen if P(it beats BMA) > eta, with eta learned leave-one-task-
    out on the reference tasks for this label count (:func:`fit_rule`), else BMA."""

    name = "irt"
    title = "IRT (low-rank)"

    def decide(self, view: TaskView) -> Decision:
        if view.reference is None or view.docs_x is None:
            raise ValueError("the irt decider needs the view's reference pool and the task's "
                             "doc embeddings (TaskView.reference, docs_x)")
        if view.n_labels and view.lab_x is None:
            raise ValueError("the irt decider needs the labelled docs' embeddings "
                             "(TaskView.lab_x)")
        data = view.reference()
        ref = reference_model(data)
        est = ref.estimate(view.docs_x, Q_lab=view.lab_x if view.n_labels else None,
                           y_lab=view.lab_y if view.n_labels else None)
        rule = reference_rule(data, view.allowed, view.n_labels)
        from .scores import argmax_with_ties

        values = np.where(view.allowed, est.mean, -np.inf)
        best, bma = argmax_with_ties(values, view.cal.mean_accuracy), view.bma
        p = est.p_beats(best, bma)
        fallback = best != bma and not p > rule.eta
        top, avg = view.models[best], view.models[bma]
        labels = f"; {view.n_labels} labelled docs update every estimate" \
            if view.n_labels else ""
        if best == bma:
            reason = (f"{avg}, the best model on average, has the highest IRT estimate "
                      f"(rank {ref.rank}; {rule.describe()}){labels}")
        else:
            verb = "kept the best model on average" if fallback else "switched to it"
            reason = (f"{top} has the highest IRT estimate ({est.mean[best]:.3f} vs "
                      f"{est.mean[bma]:.3f} for {avg}), P(it beats {avg}) = {p:.2f}: {verb} "
                      f"(rank {ref.rank}; {rule.describe()}){labels}")
        return Decision(choice=bma if fallback else best, best_by_score=best, bma=bma,
                        fallback=fallback, p_beats_bma=p, scores=values, reason=reason,
                        decided_by=self.name, details={"estimate": est, "rule": rule})


def register() -> None:
    """Make ``irt`` available as a predictor and a decider in this process (``--predictor
    irt``, ``--score irt``, an ``irt`` row in evaluate). Not registered by default: on the six
    shared sets it chose worse than the stacked switch at 0, 10 and 20 labels and it makes
    evaluate several times slower (docs/irt.md)."""
    from ..registry import deciders, predictors

    predictors.register("irt", IRTPredictor)
    deciders.register("irt", IRTDecider)


def unregister() -> None:
    """Undo :func:`register`."""
    from ..registry import deciders, predictors

    predictors.unregister("irt")
    deciders.unregister("irt")


__all__ = ["DocRegression", "IRTDecider", "IRTEstimate", "IRTFit", "IRTPredictor", "register",
           "unregister",
           "IRTReference", "IRTRule", "fit_irt", "fit_reference", "fit_rule",
           "informative_docs", "reference_model", "reference_rule"]
