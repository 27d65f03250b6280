from freyvae_cli.cli import main

main()
