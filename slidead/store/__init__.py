"""Storage adapters: object stores (local, S3), the Parquet feature store, shard results, DuckDB."""
