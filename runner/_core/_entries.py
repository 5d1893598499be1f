"""Reading a hermes-style server entry: one reader for ``authorize_many`` and ``config.yaml``. Pure.

A host hands ``authorize_many`` (and ``runner.provider``) servers as hermes-agent writes them
in its ``config.yaml``: ``{"name": {"url": ..., "auth": "oauth", "oauth": {...}, ...}}``. The
hermes config reader (``runner._hosts._hermes_config``) reads the same entries from the file.
Both read them here, with the same keys, the same value rules and the same messages, and
differ only where a caller's intent does (``hermes_config``):

- **the library** (``hermes_config=False``): every entry it is given is one to log in to. An
  entry ``auth`` leaves out is an OAuth login; one that says otherwise (``auth: header``), is
  disabled, is a stdio server, or carries a key nobody knows is an ``InvalidServerSpec``
  naming the server and the key (a mistake found before any login starts);
- **hermes's config** (``hermes_config=True``): an entry is an OAuth login only with ``auth:
  oauth``, as hermes decides it (compared stripped and lower-cased); every other entry is
  *skipped* with one reason (not a mapping; disabled, ``enabled`` read hermes's way by
  ``parse_boolish``; a stdio server; an HTTP server without ``auth: oauth``; a name this
  library cannot use as a file and lease name; a proxy ``oauth.redirect_uri``); a key hermes
  grows that is not known here is noted, not an error; and a login identifies itself with
  hermes's own Client ID Metadata Document unless the entry asks otherwise (below).

Common rules: the host's keys (``headers``, ``timeout``, ``tools``, ``sampling``, ...:
``HOST_KEYS``) are accepted and not used; ``oauth:`` keys map onto ``ServerSpec``
(``OAUTH_KEYS``; ``flow``, ``browser`` or ``device`` in any case, is ``ServerSpec.flow``);
hermes's ``user_agent`` and ``application_type`` cannot be expressed and are noted; any
other ``oauth`` key is an error; ``null`` and ``""`` mean unset (as in hermes);
``redirect_port`` and ``timeout`` may be strings hermes would convert (with ``int()`` and
``float()``, as hermes does).

Interpolation (hermes's config only; ``tools/mcp_tool_config.py``, ``_interpolate_env_vars``):
hermes replaces every ``${...}`` in an entry's string values before it reads the entry: the
body, stripped, is one of Cursor's context variables (``CONTEXT_VARIABLES``), else an
environment variable's name (a leading ``env:`` dropped); a value is not interpolated again.
Here the keys read are interpolated (``url``, ``auth``, ``enabled``, every ``oauth:`` value),
the others are not used and left alone. Where hermes keeps a reference to an unset or empty
variable as written (and would send ``${SECRET}`` as the secret), this is an error naming the
variable, the server and the key; in ``auth`` and ``enabled`` it is kept as hermes keeps it
(the entry is then skipped, or enabled, as in hermes). A message quotes a value as written,
never a variable's value. The library's rules interpolate nothing (a host passes values) and
refuse a ``url`` with ``${``. Errors are one line naming the
server and the key, as ``oauth.key``: ``HermesConfigError`` (naming the file) for a config,
``InvalidServerSpec`` for the library. Never another exception.

hermes's Client ID Metadata Document (``tools/mcp_oauth.py``, ``_maybe_use_cimd``):
``HERMES_CIMD_URL`` (its redirect URIs name ports 27890-27894, ``HERMES_CIMD_PORTS``) or
``oauth.client_metadata_url``, unless ``oauth.cimd`` is ``false`` (the boolean, as hermes
compares it) or the entry asks for an identity a document cannot present: a ``client_id``
or ``client_secret``, a ``client_name``, a ``token_endpoint_auth_method`` other than
``none``, a ``redirect_port``, a ``redirect_host`` other than ``127.0.0.1`` or ``localhost``,
or a document URL that cannot be one (noted). What only the token directory knows is
decided at login time (``runner._core._identity``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from runner._core._identity import document_url_problem
from runner._core._spec import ServerSpec, check_server_name, url_problem
from runner.errors import HermesConfigError, InvalidServerSpec

__all__ = [
    "CONTEXT_VARIABLES",
    "HERMES_CIMD_PORTS",
    "HERMES_CIMD_URL",
    "HOST_KEYS",
    "OAUTH_KEYS",
    "Entry",
    "HermesConfig",
    "hermes_safe_name",
    "parse_boolish",
    "parse_hermes_config",
    "parse_servers",
    "read_entry",
]

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

#: ``oauth:`` keys and the ``ServerSpec`` field each maps to (hermes's keys).
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
    "flow": "flow",
}
#: ``oauth:`` keys of this library's own that hermes has not (``ServerSpec`` fields).
_LIBRARY_KEYS: Final = {
    "callback_path": "callback_path",
    "client_metadata_ports": "client_metadata_ports",
}
#: ``oauth:`` keys hermes knows that ``ServerSpec`` cannot express: accepted, noted, not used.
_NOTED_KEYS: Final = {
    "user_agent": "the token requests send the SDK's own User-Agent",
    "application_type": "registrations are native loopback clients",
}
#: Every ``oauth:`` key of hermes's config (a proxy ``redirect_uri`` makes the entry
#: skipped; ``cimd`` turns the Client ID Metadata Document off).
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
#: hermes's ``${...}`` reference (``tools/mcp_tool_config.py``): any characters but ``}``.
_REFERENCE: Final = re.compile(r"\$\{([^}]+)\}")
#: hermes's context variables (Cursor's), matched case-sensitively after stripping; their
#: values are the caller's (``runner._hosts._hermes_config.hermes_context``).
CONTEXT_VARIABLES: Final = frozenset(
    {"userHome", "workspaceFolder", "workspaceFolderBasename", "pathSeparator", "/"}
)


@dataclass(frozen=True)
class Entry:
    """One entry, read: an OAuth login (``spec``, with ``notes`` on what is not used) or
    skipped (``skipped``, the reason; only in hermes's config)."""

    name: str
    spec: ServerSpec | None = None
    skipped: str | None = None
    notes: tuple[str, ...] = ()


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


class _Reader:
    """The rules of one caller (see the module docstring), and how it words an error."""

    def __init__(
        self,
        *,
        hermes_config: bool,
        source: str,
        environ: Mapping[str, str] | None = None,
        context: Mapping[str, str] | None = None,
    ) -> None:
        self.hermes = hermes_config
        self.source = source
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        self.context: Mapping[str, str] = context if context is not None else {}

    def interpolated(self, name: str, key: str, value: object, *, strict: bool = True) -> object:
        """``value`` with hermes's ``${...}`` references replaced (hermes's config only; see
        the module docstring). A reference hermes would leave as written (a variable unset
        or empty) is an error naming the variable, the server and the key (``strict``), or
        left as written, as hermes leaves it (``enabled`` and ``auth``, which decide whether
        an entry is a login at all: an unset variable there must not break a config hermes
        reads). The value of a variable is never part of a message."""
        if not self.hermes or not isinstance(value, str) or "${" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            body = match.group(1)
            known = self.context.get(body.strip())
            if known is not None:
                return known
            variable = body.strip()
            if variable.startswith("env:"):  # Cursor's spelling, as hermes accepts it
                variable = variable[len("env:") :].strip()
            found = self.environ.get(variable)
            if not found and not strict:
                return match.group(0)
            if not found:
                raise self.error(
                    name,
                    f"{key} refers to the environment variable {_shown(variable)}, which is "
                    "not set (or empty); set it, or write the value itself (hermes also reads "
                    "HERMES_HOME/.env, which this tool does not)",
                )
            return found

        return _REFERENCE.sub(replace, value)

    def error(self, name: str, text: str) -> InvalidServerSpec:
        if self.hermes:
            return HermesConfigError(f"{self.source}: server {name!r}: {text}")
        return InvalidServerSpec(f"server {name!r}: {text}")

    def not_a_login(self, name: str, reason: str) -> Entry:
        """What an entry that is no OAuth login is: skipped (config) or a mistake."""
        if self.hermes:
            return Entry(name=name, skipped=reason)
        raise self.error(name, f"{reason}; pass only servers to log in to")

    def read(self, name: str, entry: object) -> Entry:
        if not isinstance(entry, Mapping):
            if self.hermes:
                return Entry(name, skipped=f"not a mapping ({_shown(entry)}); hermes skips it too")
            raise self.error(name, "expected a mapping with a 'url'")
        enabled = self.interpolated(name, "enabled", entry.get("enabled", True), strict=False)
        if not parse_boolish(enabled):
            return self.not_a_login(name, "disabled (enabled: false)")
        auth = self.interpolated(name, "auth", entry.get("auth"), strict=False)
        if auth is not None and not isinstance(auth, str):
            raise self.error(name, "auth must be a string such as 'oauth'")
        said = (auth or "").strip().lower()
        oauth = said == "oauth" or (not self.hermes and not said)
        if "url" not in entry:
            if "command" in entry:
                return self.not_a_login(name, "stdio server ('command'): nothing to log in to")
            if oauth:
                raise self.error(name, "no 'url' (an OAuth login needs the MCP server's address)")
            return self.not_a_login(name, "no url and no command: hermes cannot start it either")
        if not oauth:
            return self.not_a_login(name, _why_not_oauth(entry, auth))
        if self.hermes:
            try:
                check_server_name(name)
            except InvalidServerSpec:
                return Entry(
                    name,
                    skipped="its name is not usable here (1-64 letters, digits, '.', '_' or "
                    "'-', starting with a letter or digit); rename it to log in with this tool",
                )
        return self.oauth_entry(name, entry)

    def oauth_entry(self, name: str, entry: Mapping[Any, Any]) -> Entry:
        written = entry.get("url")
        url = self.interpolated(name, "url", written)
        if url is None or url == "":
            raise self.error(name, "no 'url' (an OAuth login needs the MCP server's address)")
        if not isinstance(url, str):
            raise self.error(name, f"url must be a string, not {_shown(url)}")
        if url != written:
            # Checked here to quote the URL as written: a variable's value (a key in a
            # query string, say) is never part of a message.
            problem = url_problem(url)
            if problem is not None:
                raise self.error(name, f"url {_shown(written)}, interpolated, {problem}")
        if not self.hermes and "${" in url:  # the library's rules: the host interpolates
            raise self.error(
                name,
                "url uses ${...} interpolation, which is not supported here; write the "
                "address itself",
            )
        notes = self.unknown_keys(name, entry)
        oauth = entry.get("oauth")
        if oauth is None:
            oauth = {}
        if not isinstance(oauth, Mapping):
            raise self.error(name, f"oauth must be a mapping of options, not {_shown(oauth)}")
        keys = _SPEC_KEYS if self.hermes else {**_SPEC_KEYS, **_LIBRARY_KEYS}
        known = sorted({*keys, *_NOTED_KEYS, "redirect_uri", "cimd"})
        options: dict[str, Any] = {}
        for key, raw in oauth.items():
            if not isinstance(key, str) or key not in known:
                raise self.error(
                    name, f"unknown oauth key {_shown(key)}; known keys: {', '.join(known)}"
                )
            value = self.interpolated(name, f"oauth.{key}", raw)
            if key == "redirect_uri":
                if value:
                    return self.not_a_login(
                        name,
                        "oauth.redirect_uri (a proxy callback) is not supported: this tool "
                        "listens on loopback only",
                    )
                continue
            if key == "cimd":
                continue  # read by _client_document
            if key in _NOTED_KEYS:
                if value is not None and value != "":
                    notes.append(f"oauth.{key} is not used: {_NOTED_KEYS[key]}")
                continue
            if value is None or (value == "" and key != "client_name"):
                continue  # hermes treats null and empty as unset
            options[keys[key]] = self.coerced(name, key, value)
        if self.hermes:
            cimd = self.interpolated(name, "oauth.cimd", oauth.get("cimd"))
            options.update(_client_document(cimd, options, notes))
        try:
            spec = ServerSpec(name=name, url=url, **options)
        except InvalidServerSpec as exc:
            if self.hermes:
                raise HermesConfigError(f"{self.source}: {_under_oauth(str(exc))}") from None
            raise
        except TypeError as exc:  # pragma: no cover - every key maps onto a field
            raise self.error(name, str(exc)) from None
        return Entry(name, spec=spec, notes=tuple(notes))

    def unknown_keys(self, name: str, entry: Mapping[Any, Any]) -> list[str]:
        unknown = [key for key in entry if not isinstance(key, str) or key not in HOST_KEYS]
        if not unknown:
            return []
        if not self.hermes:
            raise self.error(
                name,
                f"unknown key {_shown(unknown[0])}; an OAuth login needs 'url' and takes its "
                "options under 'oauth'",
            )
        return [f"key {key!r} is not known here and was ignored" for key in unknown]

    def coerced(self, name: str, key: str, value: object) -> object:
        """hermes reads ``redirect_port`` with ``int()`` and ``timeout`` with ``float()``:
        accept the same strings ("8080", "300"); ``ServerSpec`` checks everything else."""
        if key == "redirect_port" and isinstance(value, str):
            # int() as hermes reads it; "²" passes str.isdigit() and int() refuses it.
            try:
                return int(value)
            except ValueError:
                raise self.error(
                    name, f"oauth.redirect_port {_shown(value)} is not a port number"
                ) from None
        if key == "timeout" and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise self.error(
                    name, f"oauth.timeout {value!r} is not a number of seconds"
                ) from None
            if not math.isfinite(number):
                raise self.error(name, "oauth.timeout must be finite")
            return number
        if key == "flow" and isinstance(value, str):
            return value.strip().lower()  # hermes compares it so ("Device", " device ")
        if key == "client_metadata_ports" and isinstance(value, list | tuple | set):
            return frozenset(value) if all(isinstance(p, int) for p in value) else value
        return value


def _why_not_oauth(entry: Mapping[Any, Any], auth: str | None) -> str:
    if auth is not None and auth.strip():
        return f"auth: {auth.strip()!r} is not oauth; hermes sends no OAuth login"
    if entry.get("oauth") is not None:
        return "has an oauth: block but no auth: oauth; hermes does not log in to it"
    if entry.get("headers"):
        return "HTTP server with static headers (no auth: oauth)"
    return "HTTP server without auth: oauth"


def _client_document(cimd: object, options: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """The Client ID Metadata Document options of a hermes entry (``cimd`` is its
    ``oauth.cimd``), as hermes decides them (see the module docstring). An unusable document
    URL is noted."""
    url = options.get("client_metadata_url") or HERMES_CIMD_URL
    off = {"client_metadata_url": None}
    if cimd is False:
        return off
    if options.get("flow") == "device":
        return off  # a device login has no redirect URI for a document to declare (as hermes)
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


def _under_oauth(message: str) -> str:
    """``ServerSpec``'s message with the option keys spelled as in the config (``oauth.x``)."""
    for key in _SPEC_KEYS:
        message = re.sub(rf"(?<![\w.]){key}\b", f"oauth.{key}", message, count=1)
    return message


def read_entry(name: str, entry: object, *, hermes_config: bool, source: str = "") -> Entry:
    """Read one hermes-style entry (see the module docstring for the two rule sets).

    Raises:
        InvalidServerSpec: the entry is not usable (``HermesConfigError``, naming ``source``,
            in hermes's config; in the library also an entry that is no OAuth login).
    """
    return _Reader(hermes_config=hermes_config, source=source).read(name, entry)


def parse_servers(
    servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]],
) -> list[ServerSpec]:
    """Validate the servers argument of ``authorize_many``: ``ServerSpec`` items or a
    hermes-style mapping read with the library's rules. Raises ``InvalidServerSpec``."""
    if isinstance(servers, Mapping):
        reader = _Reader(hermes_config=False, source="")
        specs = []
        for name, entry in servers.items():
            read = reader.read(str(name), entry)
            assert read.spec is not None  # the library's rules skip nothing
            specs.append(read.spec)
    else:
        try:
            specs = list(servers)
        except TypeError:
            raise InvalidServerSpec(
                f"servers must be a mapping or a list of ServerSpec, not {type(servers).__name__}"
            ) from None
        for spec in specs:
            if not isinstance(spec, ServerSpec):
                raise InvalidServerSpec(
                    f"expected ServerSpec items or a mapping of servers, got {type(spec).__name__}"
                )
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidServerSpec(f"server {spec.name!r} is listed twice")
        seen.add(spec.name)
    return specs


def parse_hermes_config(
    data: object,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    context: Mapping[str, str] | None = None,
) -> HermesConfig:
    """The OAuth servers of decoded hermes config ``data`` (its ``mcp_servers`` mapping),
    read with hermes's rules. A config without ``mcp_servers`` (or an empty one) has none.

    ``${VAR}`` references are replaced as hermes replaces them, from ``environ`` (none
    given: an empty environment) and ``context`` (the values of ``CONTEXT_VARIABLES``).

    Raises:
        HermesConfigError: an invalid value, or a reference to a variable that is not set;
            one line naming ``source``, the server, the key.
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
    reader = _Reader(hermes_config=True, source=source, environ=environ, context=context)
    stems: dict[str, str] = {}
    for name, entry in servers.items():
        if not isinstance(name, str):
            raise HermesConfigError(
                f"{source}: mcp_servers key {_shown(name)} is not a string; quote the name "
                "(YAML reads yes/no/on/off as booleans and digits as numbers)"
            )
        read = reader.read(name, entry)
        if read.spec is None:
            config.skipped.append((name, read.skipped or "skipped"))
            continue
        stem = hermes_safe_name(name)
        if stem in stems:
            raise HermesConfigError(
                f"{source}: servers {stems[stem]!r} and {name!r} share hermes's token file "
                f"{stem}.json; rename one of them"
            )
        stems[stem] = name
        config.specs.append(read.spec)
        config.notes[name] = list(read.notes)
    return config
