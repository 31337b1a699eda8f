"""Analysts: what explains an incident (the deterministic local one, and LLM ones later)."""
