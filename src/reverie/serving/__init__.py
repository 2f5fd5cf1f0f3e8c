"""Awake: the OpenAI-compatible server that serves the current release by day."""
