from ci_pool.cli import main

main()
