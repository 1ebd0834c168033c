"""The network. stages.py knows it without building one (its stages, which stage a parameter
belongs to, checkpoints) and imports no torchvision; resnet.py builds it (torchvision's
ResNet-18, adapted), which costs about 2 s of imports, so only code that builds a network
imports it."""
