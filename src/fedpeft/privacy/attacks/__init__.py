"""Privacy attacks on what a federation reveals, to measure its protections.

* :mod:`~fedpeft.privacy.attacks.labels`: a client's label distribution
  inferred from its head update (the server's view of one update, or of a
  secure sum, or of a DP release);
* :mod:`~fedpeft.privacy.attacks.membership`: membership inference on the
  final adapter (loss threshold; LiRA with shadow adapters).

Pure numpy; the benchmark that trains targets and shadows is
``bench/privacy_attacks.py``.
"""
