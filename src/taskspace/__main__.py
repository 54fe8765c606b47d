from taskspace.cli.main import main

main()
