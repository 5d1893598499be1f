"""Integrations for hosts that keep using their logins: the SDK provider whose every renewal
goes through the runner (``_provider``, public as ``runner.provider``), and reading
hermes-agent's ``config.yaml`` (``_hermes_config``, public as ``runner.hermes_config``).
"""
