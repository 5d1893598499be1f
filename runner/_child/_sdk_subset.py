"""Loading only the part of the MCP SDK that a login's child uses, for the zygote.

A login's child needs the SDK's OAuth client (``mcp.client.auth``) and its models
(``mcp.shared.auth``), nothing else. But importing either runs ``mcp/__init__.py`` and
``mcp/client/__init__.py`` first, which re-export the whole SDK: every client and server
module and all of ``mcp.types``. Measured on mcp 2.3 (``python -X importtime``): 0.50 s
to import ``mcp.client.auth`` normally, 0.18 s without those two ``__init__`` modules.
That is the larger part of a zygote's start, which a host's first login waits for.

:func:`load_oauth_client` imports the two modules with ``mcp`` and ``mcp.client`` standing
in as bare packages (a module with the real ``__path__``, so their submodules are found
and imported normally, but the ``__init__`` bodies never run). Both ``__init__`` modules
only re-export names (checked for mcp 1.26, 2.0 and 2.3), so nothing the OAuth client
needs is lost; and a process that does this must not use the SDK beyond those modules
(``mcp.ClientSession`` is not there). Only ``runner._child._zygote`` calls it, before anything
imports the SDK; its children run only ``runner._child._login``.

Guarantees: on any failure (another SDK layout, an import error) every ``mcp`` module it
added is removed again and it returns False; the caller then imports the SDK normally.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Final

__all__ = ["load_oauth_client"]

#: The packages whose ``__init__`` is skipped, outermost first.
_BARE_PACKAGES: Final = ("mcp", "mcp.client")
#: What a login's child imports from the SDK.
_WANTED: Final = ("mcp.shared.auth", "mcp.client.auth")


def load_oauth_client() -> bool:
    """Import the SDK's OAuth client and models without the SDK's package ``__init__``.

    Returns True when done that way; False when it was not attempted (the SDK is already
    imported, or is not where it is expected) or failed and was undone.
    """
    if "mcp" in sys.modules:
        return False  # too late to save anything, and the real package must stay
    spec = importlib.util.find_spec("mcp")
    if spec is None or not spec.submodule_search_locations:
        return False
    roots = list(spec.submodule_search_locations)
    try:
        for name in _BARE_PACKAGES:
            relative = name.split(".")[1:]
            sys.modules[name] = _bare_package(name, [os.path.join(r, *relative) for r in roots])
        for name in _WANTED:
            importlib.import_module(name)
    except Exception:
        for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
            del sys.modules[name]
        return False
    return True


def _bare_package(name: str, path: list[str]) -> types.ModuleType:
    module = types.ModuleType(name, f"{name}, without its __init__ (runner._child._sdk_subset)")
    module.__path__ = path
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = path
    if "." in name:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
    return module
