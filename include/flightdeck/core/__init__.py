"""The core every stage shares: settings (read once from ``FLIGHTDECK_*``), the dataset spec,
object storage (a folder or ``s3://``), the warehouse tables, the MLflow registry client and
its aliases, the set-up locks and the two ways a stage ends without doing its work
(``errors``). It imports no other FlightDeck package."""
