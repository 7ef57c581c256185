"""Deterministic compact data: captioned clips, event-camera simulator, gesture events."""
