"""The catalog: SQLite through SQLAlchemy, the record of every image and everything known about it.

:mod:`.database` opens it (:class:`~searchindex.store.catalog.database.Catalog`), :mod:`.reader`
holds every read (``catalog.read``, over the per-thread connections of :mod:`.connections`), the
repositories (:mod:`.texts`, :mod:`.captions`, :mod:`.tags`, :mod:`.concepts`) and :mod:`.batch`
hold the writes, :mod:`.schema` and :mod:`.migrations` the tables.  Nothing here knows about vectors.
"""
