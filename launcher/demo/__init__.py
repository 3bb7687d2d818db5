"""The one-command live demo (and the end-to-end test's driver).

Sets up PostgreSQL and RabbitMQ, trains and registers first models from a simulated
session when none exist, starts every service and N worker processes, streams a live
synthetic oddball session from BrainFlow's SYNTHETIC_BOARD while the queue manager swaps
the serving model, then retrains on the grown labelled data and promotes the challenger
during a second session. Each session is checked in the database: one prediction per
confirmed window, no gaps, no duplicates, held-out ROC-AUC, latency.
"""

from launcher.demo.options import CNN, LDA, DemoOptions, DemoReport
from launcher.demo.run import run_demo

__all__ = ["CNN", "LDA", "DemoOptions", "DemoReport", "run_demo"]
