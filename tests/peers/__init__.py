"""Real and simulated network peers for tests and benchmarks.

``tests.peers.snmp`` runs SNMP agents (Debian's snmpd, snmpd in a network namespace with
hundreds of interfaces, snmpsim devices), misbehaving agents (silent, tooBig) and
Debian's prometheus-snmp-exporter as a reference scraper. ``tests.peers.llm`` speaks
the Gemini, Anthropic and OpenAI REST APIs with scripted answers and failures. Every
helper is a plain context manager, so pytest fixtures and ``benchmarks/`` scripts use
them alike.
"""
