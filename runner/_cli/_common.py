"""What the command line's commands share: where the config and the tokens are, the one-line
error (``CommandError``), warnings as lines, times and tables as people read them."""

from __future__ import annotations

import argparse
import datetime
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runner._cli._errors import CommandError, printable
from runner._core._entries import HermesConfig
from runner._core._spec import FlowResult
from runner._core._stored import clamp_expiry
from runner._hosts._hermes_config import read_hermes_config
from runner._stores._hermes_store import HermesTokenStore, default_hermes_home
from runner._stores._token_store import TokenStore

__all__ = [
    "Place",
    "iso",
    "load_config",
    "outcome",
    "reported_warnings",
    "table",
    "when",
    "where",
]


@dataclass
class Place:
    """The config file and the token store one command works with."""

    config: Path
    store: TokenStore
    hermes: bool

    @property
    def token_dir(self) -> Path:
        return self.store.directory


def where(args: argparse.Namespace, *, urls: dict[str, str] | None = None) -> Place:
    home = Path(args.hermes_home).expanduser() if args.hermes_home else default_hermes_home()
    config = Path(args.config) if getattr(args, "config", None) else home / "config.yaml"
    if args.store is not None:
        return Place(config, TokenStore(args.store), hermes=False)
    return Place(config, HermesTokenStore(home, server_urls=urls), hermes=True)


def load_config(args: argparse.Namespace) -> tuple[HermesConfig, Place]:
    """The config's OAuth servers (restricted to ``--server``) and where their tokens go."""
    place = where(args)
    config = read_hermes_config(place.config)
    wanted: list[str] = list(getattr(args, "server", None) or [])
    if wanted:
        skipped = dict(config.skipped)
        for name in wanted:
            if config.spec(name) is not None:
                continue
            if name in skipped:
                raise CommandError(f"{place.config}: server {name!r} is skipped: {skipped[name]}")
            known = ", ".join(s.name for s in config.specs) or "none"
            raise CommandError(f"{place.config}: no OAuth server {name!r} (OAuth servers: {known})")
        config = HermesConfig(
            source=config.source,
            specs=[s for s in config.specs if s.name in wanted],
            skipped=[],
            notes={n: v for n, v in config.notes.items() if n in wanted},
        )
    if isinstance(place.store, HermesTokenStore):
        place.store.server_urls.update({s.name: s.url for s in config.specs})
    return config, place


@contextmanager
def reported_warnings(err: IO[str]) -> Iterator[None]:
    """Warnings (an unreadable token file, say) as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                print(f"warning: {printable(str(item.message))}", file=err, flush=True)


def when(epoch: float | None, now: float) -> str:
    """An expiry as a person reads it; any number formats (a date beyond what ``datetime``
    holds is clamped first, as every stored record's is)."""
    if epoch is None:
        return "no expiry"
    if not math.isfinite(epoch):
        return "no expiry" if epoch > 0 else "expired"
    epoch = clamp_expiry(epoch) or 0.0
    moment = datetime.datetime.fromtimestamp(epoch).astimezone()
    left = epoch - now
    span = abs(left)
    if span < 120:
        rel = f"{span:.0f}s"
    elif span < 7200:
        rel = f"{span / 60:.0f}m"
    elif span < 172800:
        rel = f"{span / 3600:.0f}h"
    else:
        rel = f"{span / 86400:.0f}d"
    return f"{moment:%Y-%m-%d %H:%M} ({'in ' + rel if left >= 0 else rel + ' ago'})"


def iso(epoch: float | None) -> str | None:
    if epoch is None or not math.isfinite(epoch):
        return None
    epoch = clamp_expiry(epoch) or 0.0
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


def table(rows: Sequence[Sequence[str]]) -> str:
    """The rows as aligned columns; every cell escaped for the terminal (``printable``)."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def outcome(result: FlowResult) -> str:
    if result.ok:
        return "ok"
    assert result.error is not None
    return f"{type(result.error).__name__}: {result.error}"
