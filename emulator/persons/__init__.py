"""The real service's logic, without HTTP: the four operations, matching, the domain errors, tokens → clients."""
