"""The client's exit statuses, shared by the entry point and the runner."""

# EX_CONFIG: a permanent problem (bad setting, missing/expired/foreign certificate, missing
# dependencies) that a restart cannot fix. The systemd unit does not restart on it
# (RestartPreventExitStatus=78).
EXIT_PERMANENT = 78
