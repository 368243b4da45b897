"""The database insight dashboard at /admin/db: Jinja2 pages, scripts, Chart.js; all from Keel."""
