"""monitoring_api: drift, prediction drift, performance, data quality, alerts and dashboards.

``create_app(core, settings)`` builds the FastAPI app; ``python -m monitoring_api`` serves it.
"""
