"""Connectors: the outside systems that feed the shared directory.

``base`` is the interface, ``runner`` schedules and records runs, ``config``
reads the ``[connectors.NAME]`` sections; ``ldap`` and ``google`` talk to
their servers, with their pure mapping rules beside them.
"""
