"""The router, in the order a recommendation flows through it:

* ``pool.py``: the reference inputs and their correctness matrix;
* ``neighbors.py``: neighbour search over them (numpy or faiss);
* ``predictors.py``: per-input correctness g (kNN built in; plugins by entry point);
* ``calibration.py`` and ``scores.py``: u, p, S1/S2/S3 and the best model on average;
* ``stacking.py``: the stacked switch fitted leave-one-task-out on the reference tasks;
* ``deciders.py``: the decisions (S1, S2, S3, the stacked switch; plugins by entry point);
* ``estimate.py``: the label posterior reported beside the decision;
* ``router.py``: the Router that fits and ties them together; ``recommendation.py`` what it
  returns; ``persistence.py`` saving, loading and the store's router cache.

    >>> from lm_router_plugin import Router   # router/router.py
"""
