"""Tests of the newcomer's path: the demo, the examples, the ``matomo-middleware`` command
line and the pytest plugin, each used the way a new user would."""
