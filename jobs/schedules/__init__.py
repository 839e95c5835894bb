"""Cron schedules: expressions (cron), services (create, fire, preview), API and serializers.

The models live in jobs/models.py with the jobs they enqueue.
"""
