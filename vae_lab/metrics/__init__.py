"""Metrics shared by the model families: likelihoods, latent-usage statistics, text scores."""
