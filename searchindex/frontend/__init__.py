"""What the front ends (the CLI, the web API) share: the search options, described once.

:mod:`.options` describes every option of a search (:data:`~.options.SEARCH_OPTIONS`);
``searchindex search`` derives its click options from it, ``GET /api/search`` its query
parameters, and :func:`.params.search_params` turns what either front end was given into
a checked search.  Importing this package is light: ``searchindex --help`` reads it.
"""
