"""retraining_api: retrain jobs outside the request, model comparison, promotion, triggers.

``create_app(core, settings)`` builds the FastAPI app (its lifespan also runs the job
runner); ``python -m retraining_api`` serves it.
"""
