"""Announcements: one sound on many devices, started at one instant across every node (issue 21).

``plan`` (what an announcement is: a sound, targets, a start instant, a
priority), ``stage`` (this node starts its devices at the instant),
``announcer`` (the node that took the call: targets by node, the plan over the
bus, the outcomes collected). A schedule or a live talk reuses the same three.
"""
