"""Redis key names of the conductor's mirror: the only place they are spelled.

Every key of a batch starts with ``batch:{<batch_id>}:``. The braces are a Redis Cluster hash
tag, so one batch lives in one slot and the merge script may touch all of its keys.

===========================  =====  ==========================================================
key                          type   content
===========================  =====  ==========================================================
``batch:{B}:meta``           hash   ``essays`` (how many), ``flags`` (JSON list, sorted),
                                    ``version`` (of the registration). The batch *marker*:
                                    the counts are only read when it is there.
``batch:{B}:pipeline_state`` hash   ``<step>`` -> succeeded, ``<step>:failed`` -> failed,
                                    ``<step>:total`` -> expected essays, once known
===========================  =====  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

FAILED_SUFFIX = ":failed"
TOTAL_SUFFIX = ":total"


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys of one batch."""

    batch_id: str

    @property
    def meta(self) -> str:
        return f"batch:{{{self.batch_id}}}:meta"

    @property
    def state(self) -> str:
        return f"batch:{{{self.batch_id}}}:pipeline_state"
