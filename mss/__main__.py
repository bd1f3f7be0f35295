from mss.cli.main import main

main()
