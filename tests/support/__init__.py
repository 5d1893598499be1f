"""What the tests share: helpers imported as ``support.<module>`` (pyproject's
``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on the path).

Nothing here starts a process or a thread on import.
"""
