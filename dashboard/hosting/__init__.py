"""A shared instance: sign-in and roles, the users file, request protection, the hosted
settings and the gunicorn server."""
