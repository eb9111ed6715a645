"""What every stage runs on.

- ``device``: ``resolve_device``, ``DEVICE_CHOICES``, ``DeviceError``: the ``--device auto|cpu|cuda`` choice.
"""
