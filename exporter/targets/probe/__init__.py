"""Probers for the multi-target endpoints, looked up by name from a module's ``prober:``."""
