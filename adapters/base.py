"""The adapter contract: read files, yield one :class:`Row` per (task, instance, model).

Adapters never fit, embed or print; they log decisions (skipped metrics, older runs) with
``logging`` and raise :class:`~lm_router_plugin.errors.InputError` for malformed input.

    class MyAdapter(Adapter):
        name = "my-harness"
        def read(self, paths):
            for path in paths:
                yield Row(source="my-harness", benchmark="", task="t", instance_id="0",
                          input_text="2+2?", model="m", metric="acc", score=1.0,
                          higher_is_better=True, origin=str(path))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..store.thresholds import Thresholds


class Row(NamedTuple):
    """One per-sample result before thresholding."""

    source: str  # lm-eval | helm | table
    benchmark: str  # HELM suite / lm-eval group; "" when unknown
    task: str
    instance_id: str
    input_text: str  # the instance's own text (zero-shot, no examples/description): embedded
    model: str
    metric: str
    score: float  # raw metric value
    higher_is_better: bool | None  # None: use the thresholds table's direction
    origin: str  # file the row was read from
    correct: int | None = None  # set by sources that give correctness directly
    prompt_hash: str = ""  # sha256 hex of the prompt the model saw ("" when unknown)
    text_rule: str = ""  # how input_text was obtained (adapters/instance_text.py RULE_*)


def file_size(path: Path) -> int:
    """Bytes of a file (0 if it cannot be read: its error comes where it is read)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Adapter(ABC):
    """Reads one kind of harness output.

    Args:
        thresholds: metric and filter choices per task (``Thresholds.load()`` by default).
        options: adapter-specific settings (documented by each adapter).
    """

    name: str = ""
    options_allowed: tuple[str, ...] = ()  # the settings ``read`` understands

    def __init__(self, thresholds: Thresholds | None = None, **options: Any):
        unknown = sorted(set(options) - set(self.options_allowed))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown option(s) {unknown}; expected "
                             f"{', '.join(self.options_allowed) or 'none'}")
        self.thresholds = thresholds or Thresholds.load()
        self.options = options
        # model id -> {"params": int | None, "cost_per_1m": float | None}, filled while reading
        self.model_metadata: dict[str, dict[str, Any]] = {}

    # Optional, for parallel reading (ingest.read_arrow; the lm-eval, HELM and EEE adapters
    # have them; the local process pool and --engine ray call them alike):
    #   plan(paths) -> list of picklable work units whose rows do not depend on each other,
    #   read_unit(unit) -> Iterator[Row] (run in a worker process with its own adapter),
    #   unit_state() -> picklable dict of what the parent needs (counts, model metadata),
    #   check_unit(state) -> checks that span units, run by the driver after each unit in
    #     plan order (e.g. the same EEE run twice), so errors come as in a serial read,
    #   finish(states, paths) -> merge the states here; raise if nothing usable was read.
    #   unit_cost(unit) -> bytes it reads (optional): the largest units start first, so a
    #     large one late in the plan is not read alone at the end (results stay in order).
    # Without them ``read`` runs in the ingesting process.

    @abstractmethod
    def read(self, paths: Sequence[Path]) -> Iterator[Row]:
        """Yield rows for every file under ``paths`` (files or folders, any depth).

        Rows for the same (task, instance_id, model) must be yielded at most once.

        Raises:
            InputError: a file is malformed (names the file, the line or key, and the fix),
                or nothing recognisable was found under ``paths``.
        """
