"""Pure computation: audio, features, models, scoring, thresholds, metrics, explanations, alarms, training. Imports no store, no MLflow, no Prefect."""
