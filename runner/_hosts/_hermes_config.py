"""Reading hermes-agent's ``config.yaml`` (or the same shape as JSON) from its file.

The file is read as any state file is, bounded and without blocking
(``statefiles.read_state_file``), decoded (YAML, or JSON for a ``.json`` file), and its
``mcp_servers`` read entry by entry with hermes's rules (``runner._core._entries``), its
``${...}`` references replaced from the environment as hermes replaces them.
Every failure is one ``HermesConfigError`` line naming the file.

Guarantees:

- a symlink is followed (dotfile managers link ``config.yaml``); its target is read as any
  config is: a FIFO, a device, a directory or a file over ``MAX_CONFIG_BYTES`` is refused
  without blocking and unread;
- decoding a file under the cap takes well under a second, whatever it holds: YAML is read
  with libyaml when present, a document of more than ``MAX_YAML_NODES`` nodes is refused
  before any value is built, and a number of more than ``MAX_NUMBER_CHARS`` characters (a
  sexagesimal ``1:2:3...`` costs quadratic time to build) is refused;
- a value YAML cannot build (``!!int ''``, ``!!timestamp x``, ``!!bool maybe``, a float out
  of range) is one line naming the file, the server and the key, and its line.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from runner._core._entries import HermesConfig
from runner._core._entries import parse_hermes_config as parse_entries
from runner.errors import HermesConfigError
from statefiles import UnreadableStateFile, read_state_file

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_NUMBER_CHARS",
    "MAX_YAML_NODES",
    "hermes_context",
    "parse_hermes_config",
    "read_config_data",
    "read_hermes_config",
]

#: The largest config file read. A hermes config is a few KB; a larger file is refused unread
#: (and the cap bounds what decoding it may cost).
MAX_CONFIG_BYTES: Final = 256 << 10
#: The most YAML nodes (scalars, sequences, mappings) a config may hold. hermes's own full
#: config is well under a thousand.
MAX_YAML_NODES: Final = 50_000
#: The longest YAML number read (an int or a float, as written).
MAX_NUMBER_CHARS: Final = 64


def hermes_context() -> dict[str, str]:
    """The values of hermes's context variables (``runner._core._entries.CONTEXT_VARIABLES``)
    in this process, as hermes computes them (its workspace is the current directory)."""
    context = {"userHome": os.path.expanduser("~"), "pathSeparator": os.sep, "/": os.sep}
    try:
        workspace = os.getcwd()
    except OSError:  # the current directory was removed: its variables are unset
        return context
    context["workspaceFolder"] = workspace
    context["workspaceFolderBasename"] = os.path.basename(workspace.rstrip("/\\")) or workspace
    return context


def read_hermes_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> HermesConfig:
    """Read and parse a hermes ``config.yaml`` (or the same shape as JSON, for a ``.json``
    file). The file is read without blocking and at most ``MAX_CONFIG_BYTES``; a symlink is
    followed. ``${VAR}`` references are read from ``environ`` (default: ``os.environ``).

    Raises:
        HermesConfigError: the file is missing or unreadable, not YAML/JSON, or holds an
            invalid value; the message is one line naming the file.
    """
    where = os.fspath(path)
    return parse_hermes_config(read_config_data(where), source=where, environ=environ)


def parse_hermes_config(
    data: object, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> HermesConfig:
    """The OAuth servers of decoded hermes config ``data``, read with hermes's rules
    (``runner._core._entries.parse_hermes_config``), its ``${VAR}`` references read from
    ``environ`` (default: ``os.environ``) and this process's context variables, as hermes
    reads them.

    Raises:
        HermesConfigError: an invalid value, or a variable that is not set; one line naming
            ``source``, the server and the key.
    """
    return parse_entries(
        data,
        source=source,
        environ=os.environ if environ is None else environ,
        context=hermes_context(),
    )


def read_config_data(path: str | os.PathLike[str]) -> object:
    """The decoded document of a config file (YAML, or JSON for a ``.json`` file), read as
    ``read_hermes_config`` reads it.

    Raises:
        HermesConfigError: the file is missing, unreadable or not YAML/JSON; one line.
    """
    where = os.fspath(path)
    try:
        # The target of a symlink, read with O_NOFOLLOW: a link swapped in after this is
        # refused, not followed.
        target = os.path.realpath(where, strict=True)
    except FileNotFoundError:
        raise HermesConfigError(
            f"{where}: no such file; pass hermes's config.yaml, or --hermes-home DIR"
        ) from None
    except (OSError, ValueError) as exc:  # a symlink loop; a NUL in the path
        raise HermesConfigError(f"{where}: cannot read it ({_why(exc)})") from None
    try:
        raw = read_state_file(target, limit=MAX_CONFIG_BYTES)
    except UnreadableStateFile as exc:
        raise HermesConfigError(f"{where}: cannot read it ({exc.reason})") from None
    except (OSError, ValueError) as exc:
        raise HermesConfigError(f"{where}: cannot read it ({_why(exc)})") from None
    if raw is None:
        raise HermesConfigError(
            f"{where}: no such file; pass hermes's config.yaml, or --hermes-home DIR"
        )
    data = _decode(raw, where)
    bad = _first_unbuilt(data)
    if bad is not None:
        raise HermesConfigError(f"{where}: {bad}")
    return data


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


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
    try:
        return _load_yaml(text)
    except RecursionError:
        raise HermesConfigError(f"{where}: YAML nested too deeply") from None
    except _yaml_error() as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise HermesConfigError(f"{where}: YAML syntax error{at}: {problem}") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise HermesConfigError(f"{where}: not valid YAML ({exc})") from None


@dataclass(frozen=True)
class _Unbuilt:
    """A YAML value that could not be built (it stands in for it until the document is
    checked, so the error can name the server and the key it sits under)."""

    problem: str
    line: int


class _TooManyNodes(ValueError):
    pass


def _yaml_error() -> type[Exception]:
    import yaml

    return yaml.YAMLError


@functools.cache
def _loader() -> type[Any]:
    """libyaml's safe loader when present (the pure-Python one is ten times slower), with
    the number and node limits of the module docstring. Built on first use: only the
    command line reads YAML, and ``--help`` loads none of it."""
    import yaml

    base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        def construct_document(self, node: Any) -> Any:
            _count_nodes(node)
            return super().construct_document(node)

    def guarded(tag: str, numeric: bool) -> None:
        build = yaml.SafeLoader.yaml_constructors[tag]

        def construct(loader: Any, node: Any) -> Any:
            line = node.start_mark.line + 1
            written = node.value if isinstance(node.value, str) else ""
            if numeric and len(written) > MAX_NUMBER_CHARS:
                return _Unbuilt(f"a number of more than {MAX_NUMBER_CHARS} characters", line)
            try:
                return build(loader, node)
            except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError):
                # PyYAML's constructors raise all of these on an explicitly tagged value
                # they cannot build (!!int '', !!bool maybe, !!timestamp x).
                kind = tag.rsplit(":", 1)[-1]
                shown = repr(written) if len(written) <= 40 else repr(written[:37]) + "..."
                return _Unbuilt(f"{shown} is not a valid YAML {kind}", line)

        Loader.add_constructor(tag, construct)

    for tag, numeric in (
        ("tag:yaml.org,2002:int", True),
        ("tag:yaml.org,2002:float", True),
        ("tag:yaml.org,2002:bool", False),
        ("tag:yaml.org,2002:timestamp", False),
        ("tag:yaml.org,2002:binary", False),
    ):
        guarded(tag, numeric)
    return Loader


def _count_nodes(root: Any) -> None:
    """Refuse a document of more than ``MAX_YAML_NODES`` nodes, before anything is built.
    Iterative; an alias is the node it names, counted once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > MAX_YAML_NODES:
            raise _TooManyNodes(f"more than {MAX_YAML_NODES} YAML nodes; a config is far smaller")
        value = node.value
        if isinstance(value, list):
            for item in value:
                if isinstance(item, tuple):
                    stack.extend(item)
                else:
                    stack.append(item)


def _load_yaml(text: str) -> object:
    import yaml

    return yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader, see _loader


def _first_unbuilt(data: object) -> str | None:
    """Where the first value YAML could not build sits, as a message: the server and the
    key under ``mcp_servers``, else the key path. Iterative; shared values visited once."""
    seen: set[int] = set()
    stack: list[tuple[object, tuple[str, ...]]] = [(data, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Unbuilt):
            if len(path) >= 2 and path[0] == "mcp_servers":
                key = ".".join(path[2:]) or "its entry"
                return f"server {path[1]!r}: {key}: {item.problem} (line {item.line})"
            where = ".".join(path) or "the document"
            return f"{where}: {item.problem} (line {item.line})"
        if id(item) in seen:
            continue
        if isinstance(item, dict):
            seen.add(id(item))
            for key, value in reversed(list(item.items())):
                if isinstance(key, _Unbuilt):
                    stack.append((key, path))
                label = key if isinstance(key, str) else repr(key)
                stack.append((value, (*path, label)))
        elif isinstance(item, list | tuple | set | frozenset):
            seen.add(id(item))
            stack.extend((value, (*path, f"[{i}]")) for i, value in enumerate(item))
    return None
