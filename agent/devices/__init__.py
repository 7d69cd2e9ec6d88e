"""The supervisor side of the driver seam: one task per device, zones of devices."""
