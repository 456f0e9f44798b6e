"""Enrolment: devices that have no certificate yet get one for a one-time code."""
