"""Loads a distilld-saved TorchScript model in Python and prints its logits.

usage: interop_load.py MODEL INPUT_F32 N C H W
Prints one line per logit as %.9g, then "features <width>".
"""
import sys

import torch

model_path, input_path = sys.argv[1], sys.argv[2]
shape = [int(v) for v in sys.argv[3:7]]
with open(input_path, "rb") as f:
    x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(shape)
torch.set_num_threads(1)
m = torch.jit.load(model_path)
m.eval()
with torch.no_grad():
    y = m(x)
    feats = m.features(x)
for v in y.flatten().tolist():
    print("%.9g" % v)
print("features %d" % feats.shape[1])
