"""What starts neurostream: the ``neurostream`` command, the demo and first-model bootstrap.

It sits above every service (it imports ``producer``, ``workers`` and each API's
``__main__``) and nothing imports it; the layers contract in ``pyproject.toml`` checks that.
"""
