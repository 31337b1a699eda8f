"""The anomaly detector's labelled evaluation: a seeded generator, baselines and scoring."""
