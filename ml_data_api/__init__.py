"""ml_data_api: datasets, production data, ground-truth labels and sessions of neurostream."""
