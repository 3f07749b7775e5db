"""The :class:`~searchindex.index.facade.Index` facade (:mod:`searchindex.index.facade`), assembled from one part
per concern (:mod:`.state`, :mod:`.writing`, :mod:`.enrichment`, :mod:`.library`)."""
