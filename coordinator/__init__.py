"""The Helium coordinator: the durable task queue, the node streams, validation,
QoS and settlement, with the bundled relay and the OpenAI-compatible gateway."""
