"""Cockpit (驾驶舱): metrics, rankings, warnings and briefings over the case loop.

The metrics layer (:mod:`jiedao.cockpit.metrics`) is the one place where every number is
defined; it computes through DuckDB over a mirror of the operational database
(:mod:`jiedao.cockpit.mirror`)."""
