"""``status``: per OAuth server, logged in or not, until when, with which scopes and port."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from runner._cli._common import iso, load_config, reported_warnings, table, when
from runner._cli._errors import printable
from runner._core._spec import ServerSpec
from runner._core._stored import StoredLogin
from runner._stores._hermes_store import registered_port

__all__ = ["login_state_words", "status"]


def login_state_words(spec: ServerSpec, login: StoredLogin | None, now: float) -> str:
    """The renewal policy's answer (``runner._core._renewal``, the one the provider and
    ``authorize`` carry out), in words."""
    from runner._core._renewal import LoginState, login_state

    if login is None:
        return "not logged in"
    if login.server_url and login.server_url != spec.url:
        return f"stored for another URL ({login.server_url})"
    state = login_state(
        login, name=spec.name, server_url=spec.url, client_id=spec.client_id, now=now
    )
    if state is LoginState.VALID:
        return "logged in"
    if state is LoginState.REFRESHABLE:
        return "expired, refreshable"
    return "expired: log in again"


def status(args: argparse.Namespace) -> int:
    config, place = load_config(args)
    now = time.time()
    servers: list[dict[str, Any]] = []
    with reported_warnings(sys.stderr):
        for spec in config.specs:
            login = place.store.load(spec.name)
            state = login_state_words(spec, login, now)
            port = registered_port(login) or spec.redirect_port or None
            servers.append(
                {
                    "name": spec.name,
                    "url": spec.url,
                    "logged_in": state == "logged in",
                    "state": state,
                    "expires_at": iso(login.expires_at) if login else None,
                    "expires": when(login.expires_at, now) if login else "-",
                    "scopes": (login.tokens.scope or "").split() if login else [],
                    "redirect_port": port,
                    "notes": config.notes.get(spec.name, []),
                }
            )
    skipped = [{"name": n, "reason": r} for n, r in config.skipped]
    if args.json:
        document = {
            "config": str(place.config),
            "token_dir": str(place.token_dir),
            "servers": servers,
            "skipped": skipped,
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"config: {printable(str(place.config))}\ntokens: {printable(str(place.token_dir))}\n")
    rows = [["SERVER", "STATE", "EXPIRES", "SCOPES", "PORT", "NOTES"]]
    for row in servers:
        rows.append(
            [
                row["name"],
                row["state"],
                row["expires"],
                " ".join(row["scopes"]) or "-",
                str(row["redirect_port"] or "-"),
                "; ".join(row["notes"]) or "-",
            ]
        )
    rows += [[s["name"], "skipped", "-", "-", "-", s["reason"]] for s in skipped]
    if len(rows) == 1:
        print(f"no mcp_servers in {printable(str(place.config))}")
        return 0
    print(table(rows))
    return 0
