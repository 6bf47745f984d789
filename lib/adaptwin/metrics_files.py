"""Reading the stages' metrics files (``data/metrics/*.json``), for any stage that reads another's numbers.

Why its own module: the claims report reads every metrics file and the placement reads the surrogates' real-run
error from ``surrogates.json``; both need the same dotted lookup, and the placement must not import the report
(a later stage) to get it.
"""

from __future__ import annotations

from typing import Any


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """``data['a']['b']`` for ``'a.b'``; keys may themselves contain dots (model names), so match greedily."""
    if dotted in data:
        return data[dotted]
    for key in sorted(data, key=len, reverse=True):
        if isinstance(data[key], dict) and dotted.startswith(f"{key}."):
            found = lookup(data[key], dotted[len(key) + 1 :])
            if found is not None:
                return found
    return None
