from kilnbase.cli import main

main()
