"""Presence: who is online, aggregated from each subscriber's devices.

``rules`` holds the pure policy: aggregation of device statuses, the
coalescing of bursts of changes, and who may see whom.
"""
