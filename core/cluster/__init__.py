"""State shared between cores: the cluster's seam.

Each interface of state that several cores must agree on (who owns a call
or a presence subject, which devices are online) lives here as a small typed
``Protocol`` with its two implementations side by side: the embedded one, in
this process's memory on the injected clock (the default, one process), and
the Redis one, for a cluster. Neither inherits from the other; the same
scenario tests run against both. ``choose.py`` chooses between them
once, for ``core/server.py``, from ``[cluster] redis_url`` (empty:
embedded), and everything else is typed against the interfaces.

- ``leases.py``: named leases with fencing tokens (``Leases``, the embedded
  ``LocalLeases``) and the ``Keeper`` that renews a node's leases;
  ``redis_leases.py``: ``RedisLeases``.
- ``devices.py``: which devices are online (``DeviceRegistry``, the
  embedded ``LocalDeviceRegistry``); ``redis_devices.py``: the cluster's.
- ``owners.py``: who owns each live call, where each node is reached, which
  calls lost their owner (``CallOwners``, the embedded ``LocalCallOwners``);
  ``redis_owners.py``: ``RedisCallOwners``.
- ``call_sets.py``: the calls every core counts alike (the bounds on
  creation, each device's calls, who is in a call: ``CallSets``,
  ``LocalCallSets``); ``redis_call_sets.py``: ``RedisCallSets``.
- ``redis_presence.py``: the cluster's ``core.presence.subjects.Subjects``
  (who owns each presence subject, by lease; the in-call flags).
- ``choose.py``: ``shared_state``, the one choice, and the node's
  background work (heartbeat, the devices' sweep under a lease, the Keeper).
- ``loops.py``: what the background loops share.
- ``redis_client.py``: the process's one Redis client.
- ``node.py``: this node's id.
"""
