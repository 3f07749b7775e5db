"""The catalog: SQLite through SQLAlchemy, the record of every image and everything known about it.

:mod:`.database` opens it (:class:`~searchindex.store.catalog.database.Catalog`), :mod:`.reader`
holds every read, the repositories (:mod:`.images`, :mod:`.texts`, :mod:`.captions`, :mod:`.tags`,
:mod:`.concepts`) hold the writes, :mod:`.schema` and :mod:`.migrations` the tables.  Nothing here
knows about vectors.
"""
