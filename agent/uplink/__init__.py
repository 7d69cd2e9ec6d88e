"""Forwarding sealed evidence: the Uplink seam, HTTP and MQTT behind it."""
