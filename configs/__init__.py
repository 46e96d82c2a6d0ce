"""Experiment configs: one ml_collections file per experiment, each with `get_config()`."""
