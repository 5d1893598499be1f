"""hermes-agent's ``config.yaml``: which ``mcp_servers`` log in with OAuth, as ``ServerSpec``.

Pure, apart from ``read_hermes_config`` reading the file (bounded and non-blocking, like any
state file: ``statefiles.read_state_file``). The rules follow hermes-agent's own reading
of its configuration (``tools/mcp_tool*.py``, ``tools/mcp_oauth.py``):

- an entry logs in with OAuth when it has a ``url`` and ``auth: oauth`` (compared stripped and
  lower-cased, as hermes does); its options are the ``oauth:`` block;
- every other entry is *skipped* with one reason: not a mapping; disabled (``enabled`` read
  hermes's way, ``parse_boolish``: absent, null or unparseable means on); a stdio server
  (``command``/``args`` and no ``url``); an HTTP server without ``auth: oauth`` (plain, or with
  static ``headers``); a name this library cannot use as a file and lease name; an
  ``oauth.redirect_uri`` (a proxy callback that is not a loopback listener);
- the keys that belong to the host (``headers``, ``timeout``, ``connect_timeout``, ``tools``,
  ``sampling``, ... see ``HOST_KEYS``) are ignored; an unknown top-level key is ignored too
  (hermes grows new ones) and named in the server's notes;
- ``oauth:`` keys: ``client_id``, ``client_secret``, ``scope``, ``redirect_port``,
  ``redirect_host``, ``client_name``, ``timeout``, ``token_endpoint_auth_method`` and
  ``client_metadata_url`` map onto ``ServerSpec``; hermes's other keys (``user_agent``,
  ``application_type``, ``flow``) cannot be expressed by ``ServerSpec`` and are named in the
  notes; any other ``oauth`` key is an error;
- a Client ID Metadata Document, as hermes decides it (``tools/mcp_oauth.py``,
  ``_maybe_use_cimd``): hermes's own document (``HERMES_CIMD_URL``, whose redirect URIs name
  ports 27890-27894, ``HERMES_CIMD_PORTS``) or ``oauth.client_metadata_url``, unless
  ``oauth.cimd`` is ``false`` (the boolean, as hermes compares it) or the entry asks for an
  identity a document cannot present: a ``client_id`` or ``client_secret``, a
  ``client_name``, a ``token_endpoint_auth_method`` other than ``none``, a ``redirect_port``
  or ``redirect_uri``, a ``redirect_host`` other than ``127.0.0.1`` or ``localhost``, or a
  document URL that cannot be one (noted). What only the token directory knows (a stored
  registration, hermes's ``.cimd-off`` mark, metadata saying the server does not support
  documents) is decided at login time (``runner._core._identity``);
- an invalid value (a missing ``url``, a bad port, a wrong type, an unknown ``oauth`` key, two
  servers that hermes would store in the same token file) is a ``HermesConfigError``: one line
  naming the file, the server and the key. Never another exception.

Not done: hermes's ``${VAR}`` interpolation of environment variables in values, and its
provider-specific defaults (Figma's client name, scope and auth method). An entry whose
``url`` holds ``${`` is an error saying so.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from runner._core._identity import document_url_problem
from runner._core._spec import ServerSpec, check_server_name
from runner.errors import HermesConfigError, InvalidServerSpec

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

#: The largest config file read. A hermes config is a few KB; a larger file is refused unread.
MAX_CONFIG_BYTES: Final = 4 << 20

#: Keys of an ``mcp_servers`` entry that belong to the host (hermes), not to the login.
HOST_KEYS: Final = frozenset(
    {
        "url",
        "auth",
        "oauth",
        "enabled",
        "command",
        "args",
        "env",
        "cwd",
        "headers",
        "timeout",
        "connect_timeout",
        "tools",
        "sampling",
        "elicitation",
        "transport",
        "ssl_verify",
        "client_cert",
        "client_key",
        "keepalive_interval",
        "idle_timeout_seconds",
        "max_lifetime_seconds",
        "lifecycle",
        "protocol",
        "skip_preflight",
        "strict_redirect_headers",
        "identity_header",
        "bearerTokenEnvVar",
        "bearer_token_env_var",
        "description",
    }
)

#: ``oauth:`` keys and the ``ServerSpec`` field each maps to.
_SPEC_KEYS: Final = {
    "client_id": "client_id",
    "client_secret": "client_secret",
    "scope": "scope",
    "redirect_port": "redirect_port",
    "redirect_host": "redirect_host",
    "client_name": "client_name",
    "timeout": "timeout",
    "token_endpoint_auth_method": "token_endpoint_auth_method",
    "client_metadata_url": "client_metadata_url",
}
#: ``oauth:`` keys hermes knows that ``ServerSpec`` cannot express: accepted, noted, not used.
_NOTED_KEYS: Final = {
    "user_agent": "the token requests send the SDK's own User-Agent",
    "application_type": "registrations are native loopback clients",
    "flow": "only the browser (authorization code) flow is done here",
}
#: Every ``oauth:`` key accepted (a proxy ``redirect_uri`` makes the entry skipped; ``cimd``
#: turns the Client ID Metadata Document off).
OAUTH_KEYS: Final = frozenset({*_SPEC_KEYS, *_NOTED_KEYS, "redirect_uri", "cimd"})

#: hermes-agent's Client ID Metadata Document, and the loopback ports its redirect URIs
#: name (on 127.0.0.1 and localhost, path /callback): hermes's default client identity.
HERMES_CIMD_URL: Final = (
    "https://nousresearch.github.io/hermes-agent/docs/oauth/client-metadata.json"
)
HERMES_CIMD_PORTS: Final = frozenset(range(27890, 27895))
_CIMD_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})

_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})
_UNSAFE: Final = re.compile(r"[^\w\-]")


@dataclass(frozen=True)
class HermesConfig:
    """The OAuth servers of a hermes config, and what was left out.

    Attributes:
        source: The file read (or the label given to ``parse_hermes_config``).
        specs: One ``ServerSpec`` per OAuth server, in the file's order.
        skipped: ``(name, reason)`` for every other entry, in the file's order.
        notes: Per OAuth server, what of its entry is not used here (may be empty).
    """

    source: str
    specs: list[ServerSpec] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def spec(self, name: str) -> ServerSpec | None:
        """The OAuth server called ``name``, if there is one."""
        return next((s for s in self.specs if s.name == name), None)


def default_hermes_home() -> Path:
    """``$HERMES_HOME``, else ``~/.hermes`` (hermes-agent's own default)."""
    explicit = os.environ.get("HERMES_HOME")
    return Path(explicit).expanduser() if explicit else Path.home() / ".hermes"


def hermes_safe_name(name: str) -> str:
    """hermes-agent's token file stem for a server name: every character outside ``[\\w-]``
    becomes ``_``, leading and trailing ``_`` are stripped, the result is cut at 128
    characters, and an empty result is ``default``."""
    return _UNSAFE.sub("_", name).strip("_")[:128] or "default"


def parse_boolish(value: object, *, default: bool = True) -> bool:
    """A hermes boolean: None is ``default``; bools and numbers as ``bool()``; the words
    true/1/yes/on and false/0/no/off (any case, stripped); anything else is ``default``."""
    if value is None:
        return default
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return default


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str | int | float | None) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def read_hermes_config(path: str | os.PathLike[str]) -> HermesConfig:
    """Read and parse a hermes ``config.yaml`` (or the same shape as JSON, for a ``.json``
    file). The file is read without blocking and at most ``MAX_CONFIG_BYTES``.

    Raises:
        HermesConfigError: the file is missing or unreadable, not YAML/JSON, or holds an
            invalid value; the message is one line naming the file.
    """
    from statefiles import UnreadableStateFile, read_state_file

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


def parse_hermes_config(data: object, *, source: str = "<config>") -> HermesConfig:
    """The OAuth servers of decoded hermes config ``data`` (its ``mcp_servers`` mapping).

    A config without ``mcp_servers`` (or with an empty one) has no servers.

    Raises:
        HermesConfigError: an invalid value; one line naming ``source``, the server, the key.
    """
    config = HermesConfig(source=source)
    if data is None:
        return config
    if not isinstance(data, Mapping):
        raise HermesConfigError(
            f"{source}: expected a mapping at the top (with mcp_servers), not {_shown(data)}"
        )
    servers = data.get("mcp_servers")
    if servers is None:
        return config
    if not isinstance(servers, Mapping):
        raise HermesConfigError(
            f"{source}: mcp_servers must be a mapping of server names, not {_shown(servers)}"
        )
    stems: dict[str, str] = {}
    for name, entry in servers.items():
        if not isinstance(name, str):
            raise HermesConfigError(
                f"{source}: mcp_servers key {_shown(name)} is not a string; quote the name "
                "(YAML reads yes/no/on/off as booleans and digits as numbers)"
            )
        reason = _skip_reason(name, entry)
        if reason is not None:
            config.skipped.append((name, reason))
            continue
        assert isinstance(entry, Mapping)
        spec, notes = _oauth_spec(source, name, entry)
        if spec is None:
            config.skipped.append((name, notes[0]))
            continue
        stem = hermes_safe_name(name)
        if stem in stems:
            raise HermesConfigError(
                f"{source}: servers {stems[stem]!r} and {name!r} share hermes's token file "
                f"{stem}.json; rename one of them"
            )
        stems[stem] = name
        config.specs.append(spec)
        config.notes[name] = notes
    return config


def _skip_reason(name: str, entry: object) -> str | None:
    """Why an entry is not an OAuth login (None: it is one, or it is invalid)."""
    if not isinstance(entry, Mapping):
        return f"not a mapping ({_shown(entry)}); hermes skips it too"
    if not parse_boolish(entry.get("enabled", True)):
        return "disabled (enabled: false)"
    auth = entry.get("auth")
    oauth = isinstance(auth, str) and auth.strip().lower() == "oauth"
    if "url" not in entry:
        if "command" in entry:
            return "stdio server (command/args): nothing to log in to"
        if oauth:
            return None  # an OAuth server without a url: an error, said by _oauth_spec
        return "no url and no command: hermes cannot start it either"
    if auth is not None and not isinstance(auth, str):
        return None  # a wrong type: an error, said by _oauth_spec
    if not oauth:
        if isinstance(auth, str) and auth.strip():
            return f"auth: {auth.strip()!r} is not oauth; hermes sends no OAuth login"
        if entry.get("oauth") is not None:
            return "has an oauth: block but no auth: oauth; hermes does not log in to it"
        if entry.get("headers"):
            return "HTTP server with static headers (no auth: oauth)"
        return "HTTP server without auth: oauth"
    try:
        check_server_name(name)
    except InvalidServerSpec:
        return (
            "its name is not usable here (1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit); rename it to log in with this tool"
        )
    return None


def _oauth_spec(
    source: str, name: str, entry: Mapping[Any, Any]
) -> tuple[ServerSpec | None, list[str]]:
    """The spec of an OAuth entry and its notes; ``(None, [reason])`` when it is skipped."""
    where = f"{source}: server {name!r}"
    auth = entry.get("auth")
    if not isinstance(auth, str):
        raise HermesConfigError(f"{where}: auth must be a string such as 'oauth'")
    url = entry.get("url")
    if url is None or url == "":
        raise HermesConfigError(f"{where}: auth: oauth needs a url (the MCP server's address)")
    if not isinstance(url, str):
        raise HermesConfigError(f"{where}: url must be a string, not {_shown(url)}")
    if "${" in url:
        raise HermesConfigError(
            f"{where}: url uses ${{...}} interpolation, which is not supported here; "
            "write the address itself"
        )
    notes = [
        f"key {key!r} is not known here and was ignored"
        for key in entry
        if isinstance(key, str) and key not in HOST_KEYS
    ]
    oauth = entry.get("oauth")
    if oauth is None:
        oauth = {}
    if not isinstance(oauth, Mapping):
        raise HermesConfigError(f"{where}: oauth must be a mapping of options, not {_shown(oauth)}")
    options: dict[str, Any] = {}
    for key, value in oauth.items():
        if not isinstance(key, str) or key not in OAUTH_KEYS:
            raise HermesConfigError(
                f"{where}: unknown oauth key {_shown(key)}; known keys: "
                f"{', '.join(sorted(OAUTH_KEYS))}"
            )
        if key == "redirect_uri":
            if value:
                return None, [
                    "oauth.redirect_uri (a proxy callback) is not supported: this tool "
                    "listens on loopback only"
                ]
            continue
        if key == "cimd":
            continue  # read by _client_document
        if key in _NOTED_KEYS:
            if value is not None and value != "":
                notes.append(f"oauth.{key} is not used: {_NOTED_KEYS[key]}")
            continue
        if value is None or (value == "" and key != "client_name"):
            continue  # hermes treats null and empty as unset
        options[_SPEC_KEYS[key]] = _coerced(where, key, value)
    options.update(_client_document(oauth, options, notes))
    try:
        return ServerSpec(name=name, url=url, **options), notes
    except InvalidServerSpec as exc:
        raise HermesConfigError(f"{source}: {_under_oauth(str(exc))}") from None


def _client_document(
    oauth: Mapping[Any, Any], options: Mapping[str, Any], notes: list[str]
) -> dict[str, Any]:
    """The Client ID Metadata Document options of an entry, as hermes decides them (see the
    module docstring); {} when the entry registers dynamically. An unusable document URL
    is noted."""
    url = options.get("client_metadata_url") or HERMES_CIMD_URL
    off = {"client_metadata_url": None}
    if oauth.get("cimd") is False:
        return off
    asks_for_another_identity = (
        options.get("client_id")
        or options.get("client_secret")
        or options.get("client_name")
        or (options.get("token_endpoint_auth_method") or "none") != "none"
        or options.get("redirect_port")
        or (options.get("redirect_host") or "127.0.0.1") not in _CIMD_HOSTS
    )
    if asks_for_another_identity:
        return off
    problem = document_url_problem(url)
    if problem is not None:
        notes.append(f"oauth.client_metadata_url is not used ({problem}); registering instead")
        return off
    return {"client_metadata_url": url, "client_metadata_ports": HERMES_CIMD_PORTS}


def _coerced(where: str, key: str, value: object) -> object:
    """hermes reads ``redirect_port`` with ``int()`` and ``timeout`` with ``float()``: accept
    the same YAML strings ("8080", "300"); everything else is checked by ``ServerSpec``."""
    if key == "redirect_port" and isinstance(value, str):
        if not value.strip().isdigit():
            raise HermesConfigError(f"{where}: oauth.redirect_port {value!r} is not a port number")
        return int(value.strip())
    if key == "timeout" and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise HermesConfigError(
                f"{where}: oauth.timeout {value!r} is not a number of seconds"
            ) from None
        if not math.isfinite(number):
            raise HermesConfigError(f"{where}: oauth.timeout must be finite")
        return number
    return value


def _under_oauth(message: str) -> str:
    """``ServerSpec``'s message with the option keys spelled as in the config (``oauth.x``)."""
    for key in _SPEC_KEYS:
        message = re.sub(rf"(?<![\w.]){key}\b", f"oauth.{key}", message, count=1)
    return message
