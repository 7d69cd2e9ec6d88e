"""Excursion rules, the alarm state machine, the alarm service and its local outputs."""
