"""Record, replay and compare against the real service (the upstream): the cassettes, the upstream hook, and the
domain-aware comparison of the upstream's answers with the emulator's own."""
