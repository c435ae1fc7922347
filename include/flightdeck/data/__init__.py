"""The data engineering stage: landed deliveries -> raw (immutable, sha256) -> staged Parquet
(typed, quarantined rows kept with their reasons, PII pseudonymised) -> profile and Great
Expectations validation -> curated partitions -> a time-split, content-addressed dataset
version. Publishes ``fd_catalog``, ``fd_deliveries``, ``fd_quarantine``,
``fd_dataset_versions``, the lake's ``raw/``, ``staged/``, ``curated/``, ``reports/`` and
``datasets/`` keys, and (through its DAG) the ``training_data`` and ``curated`` Assets.
``drift`` holds the distribution-shift statistics the gates and monitoring compare data with."""
