"""``--flow {browser,device}``: the command line's override of every server's login flow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from runner._core._messages import FLOWS
from runner._core._spec import ServerSpec

__all__ = ["FLOWS", "with_flow"]


def with_flow(specs: Iterable[ServerSpec], flow: str | None) -> list[ServerSpec]:
    """``specs`` with ``flow`` as every server's flow (``ServerSpec.flow``); as they are when
    ``flow`` is None (each server's own, from its ``oauth.flow``)."""
    if flow is None:
        return list(specs)
    return [dataclasses.replace(spec, flow=flow) for spec in specs]
