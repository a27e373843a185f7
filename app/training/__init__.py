"""The demo: synthetic data and the demo model versions, published through ``app.publish``.

- ``data``: the ``FEATURES`` spec and seeded synthetic users, events and requests;
- ``train``: ``train()``, which fits the demo pipelines, writes the feature
  table, publishes each version and sets the aliases.

Conversion, the parity gate and the artifact writer are ``app.publish``'s;
there is no second one here. Nothing is imported here, so the jobs that only
need the request generator stay light.
"""
