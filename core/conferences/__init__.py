"""Conferences: multi-party rooms on a media server (the Janus VideoRoom).

- ``rules``: who may do what to a conference, and what each input makes of it (pure).
- ``handler``: runs the rules against the store, the event log, the media
  server (through ``bridge``), in-call presence, lost devices and revoked
  sessions (``ConferenceHandler``, started and stopped by the composition root).
- ``bridge``: the interface to the media server the connector implements,
  and ``NoBridge`` for when there is none.
- ``servicer``: ConferencesService, the thin gRPC adapter over the handler.
- ``messages``: rules' values to wac.v1 messages.
- ``store``, ``tables``: conference and member rows, kept as history.
- ``wiring``: what the composition root calls to serve them.
"""
