"""Plain nn.Modules (encoders, decoders, MLP structures); no Lightning, no Hydra."""
