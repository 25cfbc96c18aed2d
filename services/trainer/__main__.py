"""`python -m services.trainer`: the trainer process, as `freshrec stack` runs it.

The process's main module is this small one, not `services.trainer.main`: a child started with
multiprocessing's spawn method (the record reader) re-imports the parent's main module unless
it is a package's `__main__`, and that module's imports (torch, FastAPI) would delay the
reader's first fetch by seconds.
"""

from services.trainer.main import main

main()
