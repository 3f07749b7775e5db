"""Enrichment over an existing index: tags, captions, duplicate groups."""
