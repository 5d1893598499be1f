"""The command line, ``python -m runner`` / ``mcp-oauth`` (``_main``): the top layer; nothing
in ``runner`` imports it.
"""
