"""Flower deployment: fedpeft's round loop over a real Flower federation.

The only package that imports ``flwr``.

* :mod:`~fedpeft.flower.server_app` runs the round loop in Flower's ServerApp
  with a :class:`~fedpeft.remote.runtime.RemoteRuntime` whose transport is
  Flower messages (:mod:`~fedpeft.flower.transport`).
* :mod:`~fedpeft.flower.client_app` relays every message to the node's
  long-lived worker (:mod:`fedpeft.remote.node`).
* :mod:`~fedpeft.flower.deploy` brings a loopback federation up and down.
"""
