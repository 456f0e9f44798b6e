"""The device-facing service: the three streams, sessions, the registry, controllers, state machine."""
