"""Prefect flows over the slidead library: ``retrain`` and ``score``. Tasks are a few lines each."""
