"""The vector index: FAISS files that cache the catalog's embeddings.

:mod:`.index` searches and saves (:class:`~searchindex.store.vectors.index.VectorIndex`),
:mod:`.kinds` decides which FAISS index type fits, :mod:`.build` builds one and :mod:`.file`
is the file format.  Nothing here imports the catalog: keeping a loaded index in step with
it is :mod:`searchindex.store.vector_store`'s work, a level up, since it reads both.
"""
