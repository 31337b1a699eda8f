"""Metric schemas shared by several sources (a collector, a multi-target kind, SNMP modules)."""
