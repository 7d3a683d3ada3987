"""Fit jobs: the store, the queue web processes submit to, the workers and the Celery app."""
