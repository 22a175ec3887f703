"""The jobs: ingest, a night, a retrain, fusion, labels, imports. They take slidead.store.services.Services and values; never prefect."""
