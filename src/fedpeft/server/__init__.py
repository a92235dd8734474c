"""Server algorithms of the round loop (:mod:`fedpeft.engine.loop`): what each
selected client is sent, which replies are accepted, and how they are merged
(:mod:`~fedpeft.server.uniform`, :mod:`~fedpeft.server.mixed_lora`), with the
mean computed in the clear, as a secure sum or under client-level DP
(:mod:`~fedpeft.server.aggregators`)."""
