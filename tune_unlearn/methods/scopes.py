"""Names of the parts of a ResNet-18 a method may work on (masking.scope_names resolves them),
kept free of torch so that method declarations import without it."""

SCOPES = ("layer4", "layer3+layer4", "layer4+fc", "fc", "all")
