"""Redis key and field names of the conductor's mirror: the only place they are spelled.

One hash per batch, ``batch:{<batch_id>}:pipeline_state`` (the braces are a Redis Cluster hash
tag). Its fields:

=====================  ===================================================================
field                  value
=====================  ===================================================================
``{version}``          the registration's version; the batch *marker*: without it, Redis
                       does not have the batch
``{essays}``           how many essays the batch has
``{flags}``            its flags, a JSON list, sorted
``<step>``             the step's succeeded count
``<step>{failed}``     its failed count, *epoch-ordered*
``<step>{timed_out}``  of those, the ones that timed out, *epoch-ordered*
``<step>{total}``      its expected essays, once known
=====================  ===================================================================

Every value only grows, so the mirror merges by keeping the larger one. Failures are the one
count a retry lowers; it also starts a new epoch of the step (``domain.counting``), so they are
stored epoch-ordered: ``epoch * 2**32 + count`` (``in_epoch``), which grows with the epoch
first (Lua's numbers are doubles: exact far beyond any epoch a step reaches).

Braces never occur in a step name (identifiers exclude them), so no step's fields can collide
with another's or with the registration's.
"""

from __future__ import annotations

VERSION = "{version}"
ESSAYS = "{essays}"
FLAGS = "{flags}"
FAILED = "{failed}"
TIMED_OUT = "{timed_out}"
TOTAL = "{total}"
_EPOCH = 2**32


def in_epoch(epoch: int, count: int) -> int:
    """A count as stored epoch-ordered."""
    return epoch * _EPOCH + count


def epoch_and_count(stored: int) -> tuple[int, int]:
    """The epoch and the count of an epoch-ordered value."""
    return divmod(stored, _EPOCH)


def batch_key(batch_id: str) -> str:
    """The hash of one batch."""
    return f"batch:{{{batch_id}}}:pipeline_state"
