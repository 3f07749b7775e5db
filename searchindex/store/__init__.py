"""Storage: the SQLite catalog and its migrations, the FAISS vector store, the writer lock, the query cache."""
