#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d):
# one database each for the Airflow metadata, the FlightDeck warehouse and the MLflow backend.
set -euo pipefail
for db in airflow warehouse mlflow; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
