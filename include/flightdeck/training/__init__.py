"""The training stage: features (spec'd joins, leakage-safe history rates, date/time parts),
candidate models with time-series CV, tuning, the packaged pyfunc, and the runner that
tracks everything in MLflow (experiment ``flightdeck/<spec>``) and registers the chosen model
as a new version of ``flightdeck-<spec>`` with the ``challenger`` alias."""
