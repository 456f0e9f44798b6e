"""Sounds: built-in synthesis, the content library, Opus, the frame clock and players, tenant uploads."""
