"""The upstream hook: record, replay, spy and compare."""
