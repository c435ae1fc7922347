"""The FlightDeck web views: what a model owner needs, read from the warehouse, the registry and the lake.

``views`` holds the queries and view models (pure functions of settings and a spec name),
``charts`` the server-drawn SVG charts, ``pages`` the Jinja2 templates (autoescaped) and
``web`` the FastAPI app that serves them. No Airflow here: the Airflow plugin
(``flightdeck_airflow.ui``) mounts the app behind Airflow's auth manager.
"""
