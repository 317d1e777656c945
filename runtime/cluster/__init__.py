"""Runners on many machines: what each has, who is alive, who serves what. Read in this order:

1. :mod:`.capabilities`: what this runner has (CPU cores, GPUs, onnxruntime providers);
2. :mod:`.heartbeat`: beats on the control topic and the view of live runners built from them;
3. :mod:`.placement`: which functions this runner serves, decided from that view
   (``gpu`` none / preferred / required);
4. :mod:`.replicas`: ``--replicas score=3``: functions in child runner processes.
"""
