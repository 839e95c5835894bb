"""Dashboard pages that span apps (see taskforge/dashboard_urls.py)."""
