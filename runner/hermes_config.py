"""hermes-agent's ``config.yaml``: which ``mcp_servers`` log in with OAuth, as ``ServerSpec``.

Public: ``read_hermes_config`` (the file, read bounded) and ``parse_hermes_config`` (its
decoded content; ``${VAR}`` read from ``os.environ`` unless ``environ=`` is given, as hermes
reads it) give a ``HermesConfig``: the OAuth servers, the entries skipped and why, and
what of each entry is not used. An entry is read as ``authorize_many`` reads a hermes-style
mapping, with hermes's own rules where a config differs (``runner._core._entries`` says
which).
"""

from __future__ import annotations

from runner._core._entries import (
    HERMES_CIMD_PORTS,
    HERMES_CIMD_URL,
    HOST_KEYS,
    OAUTH_KEYS,
    HermesConfig,
    hermes_safe_name,
    parse_boolish,
)
from runner._hosts._hermes_config import (
    MAX_CONFIG_BYTES,
    parse_hermes_config,
    read_hermes_config,
)
from runner._stores._hermes_store import default_hermes_home
from runner.errors import HermesConfigError

__all__ = [
    "HERMES_CIMD_PORTS",
    "HERMES_CIMD_URL",
    "HOST_KEYS",
    "MAX_CONFIG_BYTES",
    "OAUTH_KEYS",
    "HermesConfig",
    "HermesConfigError",
    "default_hermes_home",
    "hermes_safe_name",
    "parse_boolish",
    "parse_hermes_config",
    "read_hermes_config",
]
