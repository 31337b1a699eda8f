"""Replayed alert storms with a ground truth: the evaluation harness of issue 11.

A storm is built the way a real one is produced, in four steps, each its own module:

- :mod:`~benchmarks.storms.estate`: a randomised estate (sites, routers, switches,
  access points, firewalls, WAN links, servers, services, the exporter that polls
  them), the file_sd labels users give it, and its physical dependency graph;
- :mod:`~benchmarks.storms.scenarios`: what physically happens (a fibre is cut, a
  disk fills), and which metric conditions that makes true, when;
- :mod:`~benchmarks.storms.prometheus`: which shipped alert rules fire and resolve
  when (scrape and evaluation grids, ``for:``), per :mod:`~benchmarks.storms.rules`;
- :mod:`~benchmarks.storms.alertmanager`: which webhook deliveries the sidecar
  gets (grouping, group_wait/interval, repeats, resolves, an HA pair).

Every alert episode keeps the ground-truth incident it belongs to and whether it
is on that incident's root element. :mod:`~benchmarks.storms.scoring` replays the
deliveries through a correlator and scores its incidents against that truth.
"""
