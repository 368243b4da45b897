"""Bulk imports: streamed files and JSON_TABLE documents into the app's tables."""
