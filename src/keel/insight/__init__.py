"""Admin insight: daily activity figures and EXPLAIN plans of the app's own queries."""
