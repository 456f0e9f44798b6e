"""The operator side: a FleetService client and the ``audio-admin`` command line."""
