"""The device side: a headless client today, growing into the Raspberry Pi client."""
