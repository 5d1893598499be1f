"""The pure core: decisions, formats and state machines, with no I/O.

What a login needs next (``_renewal``), which port it leases (``_port_policy``), how a
callback or a paste is judged (``_callback``, ``_paste``, ``_routing``, ``_pages``), the
wire shapes between parent, zygote and child (``_messages``, ``_zygote_protocol``), the
login record (``_stored``), the one reader of a server entry (``_entries``, ``_spec``), a
server's challenge (``_challenge``), a login's state machine (``_lifecycle``), the progress
events (``_events``), and the pure halves of a refresh, of a metadata lookup and of a device
login (``_refresh``, ``_discovery``, ``_device``). Every function here takes values and
returns values: no socket, file, thread, process or event loop, and no layer above is
imported (the "pure" contract in pyproject.toml). Unit-tested without a server; the decoders
property-tested.
"""
