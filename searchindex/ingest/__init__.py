"""Ingest: scanning folders, reading metadata and keywords, and turning files into catalog rows."""
