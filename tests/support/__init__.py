"""What the tests share, imported as ``support.<module>`` (pyproject's pytest ``pythonpath``
puts ``tests/`` on the path). Fixtures live in the conftest.py files instead.

- ``waiting``: waits that never hang: ``wait_until`` and ``wait_for`` (a polled condition),
  ``bounded`` (a call that may block forever).
- ``flows``: what ``authorize_many`` does that a test can observe: authorization URLs and
  callbacks, raw HTTP to a callback listener, processes, leases, descriptors, progress
  (``ProgressLog``) and the runner's threads.
- ``logins``: logging in to the sandbox: ``SandboxBrowser`` (a person who consents, counted;
  optionally gated), ``login`` (``authorize_many`` with the tests' defaults), ``no_pastes``,
  ``expire``, ``refused_browser``.
- ``parents``: hosts in processes of their own: ``start_parent`` runs ``PARENT_SCRIPT`` as a
  ``ParentProcess``; ``released_together`` starts processes that go at once.
- ``sdk_client``: the MCP SDK's own OAuth client, driven through a login.
- ``hermes``: hermes-agent's login files, written and read as hermes does.
- ``children``: Python children that talk to the test in lines (the portlease tests).
- ``ports``: free loopback ports.
- ``xdist``: the directory every xdist worker of a run shares.

Nothing here starts a process or a thread on import.
"""
