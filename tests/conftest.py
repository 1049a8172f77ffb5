import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

# A shell without job control starts background commands (`pytest ... &`) with SIGINT ignored,
# and an ignored signal stays ignored in every process started from there. The interrupt tests
# send SIGINT (Ctrl-C) to this process and to the commands they start, so they need it handled
# as in a terminal: KeyboardInterrupt here, the default action in children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
