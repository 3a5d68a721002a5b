"""`edgecls bench`: latency (warm-up excluded, percentiles) and accuracy of every artifact, side by side.

Runtime side: numpy, the runtime backends and (optionally) matplotlib; never TensorFlow.
"""
