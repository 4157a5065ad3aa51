"""HTTP of the real service: the persons routes and the OAuth token route, with their parsing and rendering."""

PERSONS_PREFIX = "/api/v1/persons/"  # + set, recognize, delete, truncate
