from ci_pool.cli.main import main

main()
