"""HTTP resources of the retraining API: jobs, models (promotion, importance), triggers."""
