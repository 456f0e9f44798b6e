"""The operator side: the FleetService API, how calls run (roles, audit), the web console."""
