from aminator_ng.commands.cli import main

main()
