"""Redis key names of the state store: the only place they are spelled.

Every key of a batch starts with ``batch:{<batch_id>}:``. The braces are a Redis Cluster hash
tag, so one batch lives in one slot and the record script may touch all of its keys.

======================================  =====  ===============================================
key                                     type   content
======================================  =====  ===============================================
``batch:{B}:meta``                      hash   ``essays`` (JSON list, batch order), ``flags``
                                               (JSON list), ``version``. The batch *marker*:
                                               nothing is recorded without it, and it never
                                               outlives the other keys, so "marker present"
                                               means "all of the batch's keys are valid".
``batch:{B}:essays``                    set    the batch's essay ids (a root step's expected set)
``batch:{B}:graph``                     hash   step -> JSON ``{"r": min ratio, "d": [deps],
                                               "n": [dependants]}``
``batch:{B}:pipeline_state``            hash   ``<step>`` -> succeeded, ``<step>:failed`` ->
                                               failed, ``<step>:total`` -> expected count (set
                                               once the step's expected essays are known)
``batch:{B}:outcomes:<step>``           hash   essay -> ``succeeded`` | ``failed``
``batch:{B}:expected:<step>``           set    a dependant's expected essays, fixed when its
                                               last dependency completes satisfied
======================================  =====  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys of one batch."""

    batch_id: str

    @property
    def prefix(self) -> str:
        return f"batch:{{{self.batch_id}}}:"

    @property
    def meta(self) -> str:
        return self.prefix + "meta"

    @property
    def essays(self) -> str:
        return self.prefix + "essays"

    @property
    def graph(self) -> str:
        return self.prefix + "graph"

    @property
    def state(self) -> str:
        return self.prefix + "pipeline_state"

    @property
    def outcomes_prefix(self) -> str:
        return self.prefix + "outcomes:"

    @property
    def expected_prefix(self) -> str:
        return self.prefix + "expected:"

    def outcomes(self, step: str) -> str:
        return self.outcomes_prefix + step

    def expected(self, step: str) -> str:
        return self.expected_prefix + step

    def every(self, steps: Iterable[str]) -> list[str]:
        """Every key the batch can have, given the steps of the table."""
        keys = [self.meta, self.essays, self.graph, self.state]
        for step in steps:
            keys += [self.outcomes(step), self.expected(step)]
        return keys


# Fields of the state hash beside a step's succeeded count.
FAILED_SUFFIX = ":failed"
TOTAL_SUFFIX = ":total"
