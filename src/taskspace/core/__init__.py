"""Domain models, state machines and errors. Imports nothing of taskspace."""
