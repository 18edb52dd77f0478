"""The new task: its docs in scoring order (an lm-eval task or a prompts file, docs.py) and
its few labels (which docs to label, reading them back, the label posterior; labels.py)."""
