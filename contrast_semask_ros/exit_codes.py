"""Exit codes of every command of both packages: one meaning each (README, "Exit codes")."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a parity or quality check failed (the run itself worked)
EXIT_BAD_INPUT = 2  # bad usage or input: missing, unreadable or malformed file, bad option
EXIT_ENVIRONMENT = 3  # this machine: no GPU, TensorRT or optional package, disk full
