"""The emulator's benchmark: ``make bench`` runs ``bench/run.py``; bench/README.md says what each module measures."""
