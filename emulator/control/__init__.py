"""Everything under ``/emulator/`` that the real service lacks: the admin API and its guard, the testing aids
(journal, faults, live settings) and their shared state, snapshots, seeding and the demo page."""
