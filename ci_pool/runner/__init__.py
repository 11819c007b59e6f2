"""What a worker does with a claimed job: checkout, execute, log, record."""
