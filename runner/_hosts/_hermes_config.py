"""Reading hermes-agent's ``config.yaml`` (or the same shape as JSON) from its file.

The file is read as any state file is, bounded and without blocking
(``statefiles.read_state_file``), decoded (YAML, or JSON for a ``.json`` file), and its
``mcp_servers`` read entry by entry with hermes's rules (``runner._core._entries``).
Every failure is one ``HermesConfigError`` line naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Final

from runner._core._entries import HermesConfig, parse_hermes_config
from runner.errors import HermesConfigError
from statefiles import UnreadableStateFile, read_state_file

__all__ = ["MAX_CONFIG_BYTES", "read_hermes_config"]

#: The largest config file read. A hermes config is a few KB; a larger file is refused unread.
MAX_CONFIG_BYTES: Final = 4 << 20


def read_hermes_config(path: str | os.PathLike[str]) -> HermesConfig:
    """Read and parse a hermes ``config.yaml`` (or the same shape as JSON, for a ``.json``
    file). The file is read without blocking and at most ``MAX_CONFIG_BYTES``.

    Raises:
        HermesConfigError: the file is missing or unreadable, not YAML/JSON, or holds an
            invalid value; the message is one line naming the file.
    """
    where = os.fspath(path)
    try:
        raw = read_state_file(where, limit=MAX_CONFIG_BYTES)
    except UnreadableStateFile as exc:
        raise HermesConfigError(f"{where}: cannot read it ({exc.reason})") from None
    except OSError as exc:
        raise HermesConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if raw is None:
        raise HermesConfigError(
            f"{where}: no such file; pass hermes's config.yaml, or --hermes-home DIR"
        )
    return parse_hermes_config(_decode(raw, where), source=where)


def _decode(raw: bytes, where: str) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HermesConfigError(f"{where}: not UTF-8 text") from None
    if where.endswith(".json"):
        try:
            return json.loads(text)
        except RecursionError:
            raise HermesConfigError(f"{where}: JSON nested too deeply") from None
        except ValueError as exc:
            raise HermesConfigError(f"{where}: not valid JSON ({exc})") from None
    import yaml  # only the command line reads YAML

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise HermesConfigError(f"{where}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise HermesConfigError(f"{where}: YAML syntax error{at}: {problem}") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise HermesConfigError(f"{where}: not valid YAML ({exc})") from None
