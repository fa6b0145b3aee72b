"""Presence: who is online, aggregated from each subscriber's devices.

``rules`` holds the pure policy: aggregation of device statuses, the
coalescing of bursts of changes, and who may see whom. ``visibility``
applies that policy in bulk, ``store`` keeps each device's published status
in SQL, ``service`` sequences a change from a device or a call to the
watchers' event logs, and ``servicer`` speaks gRPC.
"""
