"""Fact → sealed, durable record: the sealer, the recorder (the one writer), audit events."""
