"""Where logins are kept: the token store (``_token_store``, one 0600 file and one lock per
server), hermes-agent's own files (``_hermes_store``), and the SDK's ``TokenStorage`` over
either (``_sdk_storage``). Public as ``runner.store`` and ``runner.hermes_store``.
"""
