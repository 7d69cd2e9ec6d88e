"""The gateway watching itself: clock, disk, the snapshot that metrics and sd_notify read."""
