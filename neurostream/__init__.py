"""neurostream: message-queue streaming inference for EEG.

The core package shared by every service: the window contract, settings, the
PostgreSQL store, the RabbitMQ topology, signal processing, feature pipelines and
model families.
"""

__version__ = "0.1.0"
