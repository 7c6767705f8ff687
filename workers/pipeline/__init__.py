"""Pure ML steps: plain typed functions, no Celery, no Redis, no settings."""
