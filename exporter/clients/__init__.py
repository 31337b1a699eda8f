"""Clients: every network or OS call the collectors make sits behind a Protocol here."""
