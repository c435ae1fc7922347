"""Monitoring and the continuous-training loop: drift, training/serving skew, stability,
invariants, staleness, performance, dependency changes and decay with late labels into
``fd_monitoring_metrics``; alerts; retraining decisions (``fd_retraining``, the ``retrain``
Asset); the ML software delivery metrics."""
