"""The grpc.aio audio service: authentication, per-device state, audio streaming."""
