"""Calls: WebRTC call signalling between subscribers.

``machine`` holds the rules of one call as a pure state machine; the
servicer feeds it requests, timers and lost devices and carries out the
effects it returns (deliver events, start and cancel timers).
"""
