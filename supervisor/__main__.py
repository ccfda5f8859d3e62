from arq_supervise.cli import main

main()
