"""The store: the correctness table (one row per task, instance and model), its schema,
reading harness outputs into it (ingest) and the thresholds that turn scores into 0/1.

    >>> from lm_router_plugin import Store, ingest
    >>> ingest("lm-eval", ["runs/"], Store("lm-router-store"))
"""
