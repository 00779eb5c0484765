from aminator_ng.cli import main

main()
