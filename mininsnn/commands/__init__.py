"""The command-line verbs of ``mininsnn``, one module per verb or family (the top floor: nothing in
the library imports them; mininsnn.cli builds the parser from them and dispatches):

    args       the usage error, the parser that raises it, shared flag types and setting flags
    train      mininsnn train                   evaluate   mininsnn eval
    plots      mininsnn plot, compare           study      mininsnn tune, sweep
    report     mininsnn report                  deploy     mininsnn export, infer

Each module has, per verb, a function adding its arguments and a function running it, which
returns the exit code.
"""
import os

# mininsnn parallelises with Numba threads; the per-sample matrix products inside them must not
# start BLAS threads of their own (2 x 2 threads on 2 cores thrash). Before NumPy loads BLAS:
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
