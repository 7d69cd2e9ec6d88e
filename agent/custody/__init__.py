"""Scans → EPCIS records; where lots are, what they were exposed to, what needs action."""
