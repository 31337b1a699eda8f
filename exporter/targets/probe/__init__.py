"""``/probe``: the probers (icmp, tcp, http), their module types and the kind's scraper."""
