import os

# The CUDA kernel tests run on Numba's simulator unless a real device is asked for;
# this must happen before numba is first imported, whatever the collection order.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
