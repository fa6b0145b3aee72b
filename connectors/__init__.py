"""Connectors: the outside systems that feed the shared directory.

Each directory connector is an adapter behind the core's interface
(``core.directory.connector``), whose runs the core schedules and records; ``config``
reads the ``[connectors.NAME]`` sections; ``ldap`` and ``google`` talk to
their servers, with their pure mapping rules beside them.
"""
