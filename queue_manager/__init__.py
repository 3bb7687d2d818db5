"""queue_manager: the HTTP API for services, the model registry, assignments, jobs and workers.

``create_app(core, settings)`` builds the FastAPI app; ``python -m queue_manager`` serves it.
"""
