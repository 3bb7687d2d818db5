"""One router per resource: datasets, production data, labels, sessions."""
