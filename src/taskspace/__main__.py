from taskspace.cli import run

run()
