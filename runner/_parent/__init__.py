"""The host's side of a login: ``Runner`` and ``authorize_many`` (``_runner``), the
``Supervisor`` that carries out the pure core's decisions for each login (``_supervisor``),
starting and stopping children (``_launch``, ``_child_lifetime``), refreshing and looking up
metadata in the parent (``_refresher``, ``_rediscovery``), the host's callbacks off the event
loop (``_offloop``, ``_progress``, ``_notices``, ``_terminal``). Imports the stores, the I/O
leaves, the pure core and portlease; never the hosts or the command line above it.
"""
