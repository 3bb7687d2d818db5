"""BrainFlow producer: board -> windows -> RabbitMQ (see ``producer.session.run_session``)."""
