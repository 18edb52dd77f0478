"""The strict leave-one-task-out evaluation of every decider (protocol.py) and its figures
(plots.py).

    >>> from lm_router_plugin import evaluate   # evaluation/protocol.py
"""
