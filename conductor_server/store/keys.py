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
``<step>{failed}``     its failed count
``<step>{total}``      its expected essays, once known
=====================  ===================================================================

Braces never occur in a step name (identifiers exclude them), so no step's fields can collide
with another's or with the registration's.
"""

from __future__ import annotations

VERSION = "{version}"
ESSAYS = "{essays}"
FLAGS = "{flags}"
FAILED = "{failed}"
TOTAL = "{total}"


def batch_key(batch_id: str) -> str:
    """The hash of one batch."""
    return f"batch:{{{batch_id}}}:pipeline_state"
