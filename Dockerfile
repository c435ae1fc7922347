# The FlightDeck image: Airflow (pinned), the project's pinned stack and the project itself.
# Built by `docker compose build` (docker-compose.yaml); every Airflow service and MLflow run it.
FROM apache/airflow:3.3.2-python3.11

ENV FLIGHTDECK_SRC=/opt/flightdeck
COPY --chown=airflow:root requirements.txt ${FLIGHTDECK_SRC}/requirements.txt
# requirements.txt pins apache-airflow==3.3.2 itself, so pip keeps the image's Airflow
RUN pip install --no-cache-dir -r ${FLIGHTDECK_SRC}/requirements.txt

COPY --chown=airflow:root pyproject.toml ${FLIGHTDECK_SRC}/pyproject.toml
COPY --chown=airflow:root include ${FLIGHTDECK_SRC}/include
COPY --chown=airflow:root plugins ${FLIGHTDECK_SRC}/plugins
COPY --chown=airflow:root dags ${FLIGHTDECK_SRC}/dags
# editable, as `make install` does: the DAGs, the specs and the library keep one import path
RUN pip install --no-cache-dir --no-deps -e ${FLIGHTDECK_SRC}
