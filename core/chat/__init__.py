"""Chat: one-to-one and group conversations, their messages, read state
and blocks (MessagesService).

- ``rules``: who may do what to a conversation, and what each input makes
  of it (pure).
- ``handler``: runs the rules against the store and the event log, and
  purges messages past their retention (``ChatHandler``, started and
  stopped by the composition root).
- ``servicer``: MessagesService, the thin gRPC adapter over the handler.
- ``messages``: rules' values to wac.v1 messages.
- ``store``, ``tables``: conversation, member, message and block rows.
- ``wiring``: what the composition root calls to serve them.
"""
