from meshclaw.cli.main import main

main()
