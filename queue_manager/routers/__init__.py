"""One router per resource of the queue manager API."""
