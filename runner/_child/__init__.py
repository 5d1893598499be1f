"""What runs in a login's child process, and the zygote that forks it.

``_login`` (run as ``python -m runner._child._login`` under ``spawn``) serves the callback on
the inherited socket and drives the SDK's OAuth client through ``_sdk``; ``_zygote`` preloads
all of it once (``_sdk_subset``: the SDK's OAuth client without the rest of the SDK) and forks
a child per login. Everything this package imports is paid for by every child: it imports the
pure core and the I/O leaves, never the parent, the stores, the hosts or portlease (the
"child" contract in pyproject.toml). This file stays empty for the same reason.
"""
